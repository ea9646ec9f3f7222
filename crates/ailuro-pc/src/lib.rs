//! ailuro-pc (under construction)
