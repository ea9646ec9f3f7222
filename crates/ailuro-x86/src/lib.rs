//! ailuro-x86 (under construction)
