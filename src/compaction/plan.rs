//! Pure binpack planning: `plan(files, settings) -> Plan`, no I/O and no clock.
