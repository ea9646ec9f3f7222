//! ailuro-cli (under construction)
