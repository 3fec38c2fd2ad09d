//! Pure decisions: given what was observed, say what to do next. No I/O, no
//! async. Filled in by the following modules.
