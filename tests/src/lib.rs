//! End-to-end test support: starting the real Covenant binaries on loopback
//! arrives with issue #9. The tests themselves live in `tests/tests/`.
