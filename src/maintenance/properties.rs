//! Reconciling a table's properties and format version with what its policy desires.
