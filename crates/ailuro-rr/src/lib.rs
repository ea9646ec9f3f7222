//! ailuro-rr (under construction)
