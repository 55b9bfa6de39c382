//! The daemon's typed configuration: one TOML file plus `EDGECLASS__SECTION__KEY` overrides.
