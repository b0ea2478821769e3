//! Input tests.
