//! The provisioning bundle's shape: the files `covenant admin enroll`
//! writes for a device and `covenant-agent provision` reads, named once
//! here so the two sides cannot drift apart. Names only; reading and
//! writing them is the CLI's and the agent's business.

/// The device's certificate (PEM), issued by the vendor's CA.
pub const CERT: &str = "cert.pem";
/// The vendor's CA certificate (PEM): the server's certificate chains to it.
pub const CA: &str = "ca.pem";
/// The trusted root's signed envelope.
pub const ROOT: &str = "root.json";
/// The server's address (`https://…`), one line.
pub const SERVER: &str = "server";
/// The deployment id, one line.
pub const DEPLOYMENT: &str = "deployment";
/// The ledger's note verifier keys the root names, one a line.
pub const LEDGER_VKEY: &str = "ledger.vkey";
/// The witnesses' cosignature verifier keys the root names, one a line.
pub const WITNESSES_VKEYS: &str = "witnesses.vkeys";

/// Every file of a bundle, in the order the enrolling admin is told them.
pub const FILES: [&str; 7] = [CERT, CA, ROOT, SERVER, DEPLOYMENT, LEDGER_VKEY, WITNESSES_VKEYS];
