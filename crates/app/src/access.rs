//! The scope ceiling, applied at the choke point: an interaction on a type
//! is allowed only within the caller's scopes, and `patient/` scopes reach
//! only the data of the patient in context (the resources sealed under that
//! patient's key: the patient compartment). The access-policy capability
//! decides, within this ceiling, what the caller may really do.

use auth::scope::{Context, Interaction};
use model::{KeyOwner, PatientId, ResourceType};

use crate::{AppError, Principal, Versioned, Vigil};

/// What a caller may reach for one interaction on one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    All,
    /// Only resources sealed under this owner's key.
    Compartment(KeyOwner),
}

fn verb(i: Interaction) -> &'static str {
    match i {
        Interaction::Create => "create",
        Interaction::Read => "read",
        Interaction::Update => "update",
        Interaction::Delete => "delete",
        Interaction::Search => "search",
    }
}

impl Access {
    pub(crate) fn allows(&self, owner: &KeyOwner) -> Result<(), AppError> {
        match self {
            Access::All => Ok(()),
            Access::Compartment(o) if o == owner => Ok(()),
            Access::Compartment(_) => {
                Err(AppError::Forbidden("outside the patient in context".into()))
            }
        }
    }

    pub(crate) fn allows_versioned(&self, v: &Versioned) -> bool {
        match (self, &v.resource) {
            (Access::All, _) => true,
            (Access::Compartment(o), Some(r)) => crate::records::key_owner(v.rtype, &v.id, r) == *o,
            (Access::Compartment(_), None) => false,
        }
    }
}

impl Vigil {
    /// The ceiling for `interaction` on `rtype`. Fails closed: no scope, no access.
    pub(crate) fn permit(
        &self,
        who: &Principal,
        rtype: ResourceType,
        interaction: Interaction,
    ) -> Result<Access, AppError> {
        let c = match who {
            Principal::Operator => return Ok(Access::All),
            Principal::User(c) => c,
        };
        let t = rtype.as_str();
        if c.scopes.permits(Context::System, t, interaction)
            || c.scopes.permits(Context::User, t, interaction)
        {
            return Ok(Access::All);
        }
        if c.scopes.permits(Context::Patient, t, interaction) {
            return match &c.patient {
                Some(p) => Ok(Access::Compartment(KeyOwner::Patient(PatientId(p.clone())))),
                None => Err(AppError::Forbidden("no patient in context".into())),
            };
        }
        Err(AppError::Forbidden(format!(
            "the granted scopes do not allow {} on {t}",
            verb(interaction)
        )))
    }
}
