//! End-to-end tests of VALORA mesh live in `tests/`; this library is empty.
