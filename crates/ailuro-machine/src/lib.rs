//! ailuro-machine (under construction)
