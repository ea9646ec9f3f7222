//! ailuro-boot (under construction)
