//! The server's data directory as one type: [`DataDir`] names every file
//! and folder in it, and everything else asks it for a path (the ledger's
//! own files under `ledger/` are `ledger::store`'s).
//!
//! ```text
//! DIR/FORMAT                    the ledger format the data was written in
//! DIR/accepted-losses.json      the losses restores accepted (each also in the ledger)
//! DIR/root.json                 the root of trust, version 1 (DSSE envelope)
//! DIR/ca.pem, ca.key            the vendor's CA (key 0600)
//! DIR/server.pem, server.key    the server's TLS certificate
//! DIR/ledger.vkey               the ledger's C2SP verifier key
//! DIR/decision.pub              the decision key's public half (hex)
//! DIR/keys.toml                the online keys held in a PKCS#11 token, by URI
//! DIR/keys/*.key                signing-key seeds, hex (0600); in production
//!                               only decision.key and ledger.key live here
//! DIR/keys/subjects.key         the subject secret, hex (0600): derives the
//!                               subject keys behind the headers' subject tags
//! DIR/keys/witness-dev.key      the development witness's C2SP key
//! DIR/witness-dev.vkey          its cosignature verifier key
//! DIR/witness-dev-state.json    what the development witness cosigned
//! DIR/witnesses.toml            the outside witnesses
//! DIR/ledger/                   the ledger (see ledger::store)
//! DIR/views/                    the sled views (derived)
//! DIR/artifacts/<sha256>        the artifact store (tmp/ while received)
//! DIR/identities/<name>/        cert.pem, key.pem, ca.pem, root.json, signing.key
//! ```

use std::path::{Path, PathBuf};

use covenant_core::digest::Sha256Digest;

/// The development witness's record of what it cosigned, in the data
/// directory.
pub const DEV_WITNESS_STATE: &str = "witness-dev-state.json";

/// A server's data directory: every path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `keys.toml`: the online keys held in a PKCS#11 token, by URI
    /// (`crate::datadir::HeldKeys`).
    pub fn held_keys(&self) -> PathBuf {
        self.root.join("keys.toml")
    }

    /// `accepted-losses.json`: the losses restores accepted (written by
    /// `covenant-server restore --accept-loss`; each is recorded in the
    /// ledger too, and the server refuses to open if one is not).
    pub fn accepted_losses(&self) -> PathBuf {
        self.root.join("accepted-losses.json")
    }

    /// `FORMAT`: which ledger format the directory's ledger is written in
    /// (`crate::datadir::LEDGER_FORMAT`).
    pub fn format(&self) -> PathBuf {
        self.root.join("FORMAT")
    }

    /// `root.json`: the root of trust the ledger began with (or the newest
    /// the ceremony appended).
    pub fn root_json(&self) -> PathBuf {
        self.root.join("root.json")
    }

    /// `ca.pem`: the CA's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// `ca.key`: the CA's private key (0600).
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }

    /// `server.pem`: the server's TLS certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.pem")
    }

    /// `server.key`: the server's TLS private key (0600).
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }

    /// `ledger.vkey`: the ledger's C2SP verifier key.
    pub fn ledger_vkey(&self) -> PathBuf {
        self.root.join("ledger.vkey")
    }

    /// `decision.pub`: the decision key's public half, for the root ceremony.
    pub fn decision_pub(&self) -> PathBuf {
        self.root.join("decision.pub")
    }

    /// `keys/`: the signing-key seeds.
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// `keys/decision.key`.
    pub fn decision_key(&self) -> PathBuf {
        self.root.join("keys/decision.key")
    }

    /// `keys/ledger.key`.
    pub fn ledger_key(&self) -> PathBuf {
        self.root.join("keys/ledger.key")
    }

    /// `keys/subjects.key`: the subject secret.
    pub fn subjects_key(&self) -> PathBuf {
        self.root.join("keys/subjects.key")
    }

    /// `keys/root-N.key` (development only), N from 1.
    pub fn root_key(&self, n: usize) -> PathBuf {
        self.root.join(format!("keys/root-{n}.key"))
    }

    /// `keys/release-N.key` (development only), N from 1.
    pub fn release_key(&self, n: usize) -> PathBuf {
        self.root.join(format!("keys/release-{n}.key"))
    }

    /// `keys/witness-dev.key`: the development witness's C2SP private key.
    pub fn witness_dev_key(&self) -> PathBuf {
        self.root.join("keys/witness-dev.key")
    }

    /// `witness-dev.vkey`: the development witness's verifier key.
    pub fn witness_dev_vkey(&self) -> PathBuf {
        self.root.join("witness-dev.vkey")
    }

    /// `witness-dev-state.json`: what the development witness cosigned.
    pub fn witness_dev_state(&self) -> PathBuf {
        self.root.join(DEV_WITNESS_STATE)
    }

    /// `witnesses.toml`: the outside witnesses.
    pub fn witnesses_toml(&self) -> PathBuf {
        self.root.join("witnesses.toml")
    }

    /// A file `witnesses.toml` names (relative paths are the directory's).
    pub fn file(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }

    /// `ledger/`: the ledger's files.
    pub fn ledger(&self) -> PathBuf {
        self.root.join("ledger")
    }

    /// `views/`: the sled views.
    pub fn views(&self) -> PathBuf {
        self.root.join("views")
    }

    /// `artifacts/<sha256 hex>`: a stored artifact.
    pub fn artifact(&self, sha256: &Sha256Digest) -> PathBuf {
        self.root.join("artifacts").join(sha256.to_string())
    }

    /// `artifacts/tmp/`: artifacts being received.
    pub fn artifacts_tmp(&self) -> PathBuf {
        self.root.join("artifacts").join("tmp")
    }

    /// `identities/`: the identities `init --dev` made.
    pub fn identities(&self) -> PathBuf {
        self.root.join("identities")
    }

    /// `identities/<name>/`.
    pub fn identity(&self, name: &str) -> IdentityDir {
        IdentityDir::new(self.identities().join(name))
    }
}

/// A folder holding one identity's files: what `init --dev` makes per
/// person and `certify` writes for the first admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityDir {
    root: PathBuf,
}

impl IdentityDir {
    /// The identity folder at `root`.
    pub fn new(root: impl Into<PathBuf>) -> IdentityDir {
        IdentityDir { root: root.into() }
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `cert.pem`: the client certificate.
    pub fn cert(&self) -> PathBuf {
        self.root.join("cert.pem")
    }

    /// `key.pem`: the certificate's private key (0600).
    pub fn key(&self) -> PathBuf {
        self.root.join("key.pem")
    }

    /// `ca.pem`: the CA that issued it.
    pub fn ca(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// `root.json`: the root of trust.
    pub fn root_json(&self) -> PathBuf {
        self.root.join("root.json")
    }

    /// `signing.key`: the identity's signing-key seed (0600).
    pub fn signing_key(&self) -> PathBuf {
        self.root.join("signing.key")
    }

    /// `registration.json`: the unsigned admin action registering it.
    pub fn registration(&self) -> PathBuf {
        self.root.join("registration.json")
    }
}
