//! Built-in word lists for the synthetic town. Every name is a made-up
//! combination of two parts, so no list entry is a real person's name.

/// First halves of family names.
const FAMILY_HEADS: [&str; 20] = [
    "Ash", "Bel", "Car", "Dun", "El", "Fair", "Gar", "Hal", "Iver", "Kel", "Lind", "Mar", "Nor",
    "Oak", "Pem", "Quin", "Ros", "Sel", "Thorn", "Wal",
];
/// Second halves of family names.
const FAMILY_TAILS: [&str; 12] = [
    "by", "ford", "ton", "well", "wood", "ley", "man", "son", "stead", "more", "field", "ham",
];
/// First halves of given names.
const GIVEN_HEADS: [&str; 12] = [
    "Al", "Bri", "Ca", "Da", "E", "Fe", "Gi", "Ha", "I", "Jo", "Ka", "Li",
];
/// Second halves of given names.
const GIVEN_TAILS: [&str; 10] = [
    "na", "ra", "mon", "lia", "ton", "ric", "ssa", "vin", "dan", "ne",
];
/// Street names.
const STREET_BASES: [&str; 32] = [
    "Maple", "Cedar", "Birch", "Willow", "Elm", "Aspen", "Hawthorn", "Juniper", "Laurel", "Linden",
    "Alder", "Poplar", "Rowan", "Spruce", "Hazel", "Holly", "Orchard", "River", "Mill", "Church",
    "Station", "Bridge", "Market", "Park", "Meadow", "Hill", "Lake", "Spring", "Garden", "Forest",
    "Harbor", "Valley",
];
/// Street kinds.
const STREET_KINDS: [&str; 10] = [
    "Street", "Avenue", "Road", "Lane", "Drive", "Court", "Way", "Place", "Terrace", "Close",
];
/// Cities of the town.
pub const CITIES: [&str; 6] = [
    "Ashford",
    "Brookvale",
    "Carrow",
    "Dunmere",
    "Eastwick",
    "Fallon",
];

/// Number of family names (240).
pub const FAMILY_COUNT: usize = FAMILY_HEADS.len() * FAMILY_TAILS.len();
/// Number of given names (120).
pub const GIVEN_COUNT: usize = GIVEN_HEADS.len() * GIVEN_TAILS.len();
/// Number of streets (320).
pub const STREET_COUNT: usize = STREET_BASES.len() * STREET_KINDS.len();

fn pair(heads: &[&str], tails: &[&str], i: usize, sep: &str) -> String {
    let t = tails.len().max(1);
    let head = heads.get(i / t % heads.len().max(1)).copied().unwrap_or("");
    let tail = tails.get(i % t).copied().unwrap_or("");
    format!("{head}{sep}{tail}")
}

/// The `i`-th family name. The order is shuffled against the list's
/// structure so that Zipf ranks do not follow the alphabet.
pub fn family(i: usize) -> String {
    // 7 is coprime with 240: a fixed permutation of the ranks.
    pair(&FAMILY_HEADS, &FAMILY_TAILS, (i * 7 + 3) % FAMILY_COUNT, "")
}

/// The `i`-th given name.
pub fn given(i: usize) -> String {
    pair(&GIVEN_HEADS, &GIVEN_TAILS, i % GIVEN_COUNT, "")
}

/// The `i`-th street name.
pub fn street(i: usize) -> String {
    // 13 is coprime with 320: neighbouring streets get different names.
    pair(
        &STREET_BASES,
        &STREET_KINDS,
        (i * 13 + 5) % STREET_COUNT,
        " ",
    )
}

/// The city's name.
pub fn city(i: usize) -> &'static str {
    CITIES.get(i).copied().unwrap_or("Ashford")
}
