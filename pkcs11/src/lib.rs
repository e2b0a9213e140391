//! Keys held in a PKCS#11 token (docs/operations.md, "Keys in a PKCS#11
//! token"): a key is named by an RFC 7512 URI ([`Pkcs11Uri`]), signs pure
//! Ed25519 (`CKM_EDDSA`) through the `cryptoki` binding, and its private
//! half never leaves the token. [`Pkcs11Key`] is a
//! [`covenant_core::keys::Signer`], so the server's decision and ledger
//! keys and the CLI's release and root signing take one in place of a key
//! file. [`generate`] makes a key in a token (not extractable, sensitive).
//!
//! One module is loaded and initialised once per process (a second
//! `C_Initialize` fails); each key keeps one logged-in session behind a
//! mutex, and logs in again if the token says it is not.

#![forbid(unsafe_code)]

mod uri;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use covenant_core::keys::{PublicKey, SignError, Signer};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

pub use uri::{Pkcs11Uri, UriError};

/// The environment variable naming the module when a URI names none.
pub const MODULE_ENV: &str = "COVENANT_PKCS11_MODULE";
/// The environment variable holding the user PIN when a URI gives none.
pub const PIN_ENV: &str = "COVENANT_PKCS11_PIN";
/// Where Debian's SoftHSM2 package puts its module, the last default.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The DER of the Ed25519 curve's OID (1.3.101.112), `CKA_EC_PARAMS`.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Why a key in a token could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The URI does not parse.
    #[error("{0}")]
    Uri(#[from] UriError),
    /// The module could not be loaded or initialised.
    #[error("the PKCS#11 module {module} could not be loaded: {why}")]
    Module {
        /// Its path.
        module: String,
        /// Why.
        why: String,
    },
    /// No token with that label.
    #[error("no token labelled {0:?} is present (softhsm2-util --show-slots lists them)")]
    NoToken(String),
    /// No PIN in the URI, its file or the environment.
    #[error("no PIN for token {0:?}: give pin-source=file:PATH or pin-value= in the URI, or set {PIN_ENV}")]
    NoPin(String),
    /// The PIN file could not be read.
    #[error("the PIN file {path}: {why}")]
    PinFile {
        /// Its path.
        path: String,
        /// Why.
        why: String,
    },
    /// The token refused the PIN.
    #[error("the token {0:?} refused the PIN")]
    BadPin(String),
    /// No Ed25519 key of that label (or several).
    #[error("token {token:?} holds {found} Ed25519 private keys labelled {object:?}; exactly one is needed")]
    NoKey {
        /// The token.
        token: String,
        /// The label.
        object: String,
        /// How many were found.
        found: usize,
    },
    /// A key of that label exists already (on [`generate`]).
    #[error("token {token:?} already holds a key labelled {object:?}")]
    Exists {
        /// The token.
        token: String,
        /// The label.
        object: String,
    },
    /// Any other answer of the token.
    #[error("the token {token:?}: {why}")]
    Token {
        /// The token.
        token: String,
        /// What it said.
        why: String,
    },
}

/// The modules loaded in this process, by path.
fn modules() -> &'static Mutex<BTreeMap<PathBuf, Pkcs11>> {
    static MODULES: OnceLock<Mutex<BTreeMap<PathBuf, Pkcs11>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// The module the URI names, else [`MODULE_ENV`], else SoftHSM2's.
fn module_path(uri: &Pkcs11Uri) -> PathBuf {
    uri.module_path
        .clone()
        .or_else(|| std::env::var_os(MODULE_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(SOFTHSM2_MODULE))
}

/// The loaded and initialised module at `path`.
fn module(path: &PathBuf) -> Result<Pkcs11, HsmError> {
    let failed = |why: String| HsmError::Module { module: path.display().to_string(), why };
    let mut loaded = modules().lock().map_err(|_| failed("the module table's lock is poisoned".into()))?;
    if let Some(m) = loaded.get(path) {
        return Ok(m.clone());
    }
    if !path.is_file() {
        return Err(failed(format!(
            "no such file (install SoftHSM2 or your HSM's module, name it with module-path= or {MODULE_ENV})"
        )));
    }
    let m = Pkcs11::new(path).map_err(|e| failed(e.to_string()))?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed(e.to_string())),
    }
    loaded.insert(path.clone(), m.clone());
    Ok(m)
}

/// The slot of the token labelled `label`.
fn slot_of(m: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    let token = |e: CkError| HsmError::Token { token: label.to_owned(), why: e.to_string() };
    for slot in m.get_slots_with_token().map_err(token)? {
        if m.get_token_info(slot).map_err(token)?.label() == label {
            return Ok(slot);
        }
    }
    Err(HsmError::NoToken(label.to_owned()))
}

/// The user PIN: the URI's `pin-value`, its `pin-source` file, or [`PIN_ENV`].
fn pin(uri: &Pkcs11Uri) -> Result<AuthPin, HsmError> {
    if let Some(v) = &uri.pin_value {
        return Ok(AuthPin::new(v.clone().into()));
    }
    if let Some(path) = &uri.pin_source {
        let text = std::fs::read_to_string(path)
            .map_err(|e| HsmError::PinFile { path: path.display().to_string(), why: e.to_string() })?;
        return Ok(AuthPin::new(text.trim_end_matches(['\n', '\r']).to_owned().into()));
    }
    match std::env::var(PIN_ENV) {
        Ok(v) => Ok(AuthPin::new(v.into())),
        Err(_) => Err(HsmError::NoPin(uri.token.clone())),
    }
}

/// Logs `session` in as the user.
fn login(session: &Session, uri: &Pkcs11Uri) -> Result<(), HsmError> {
    match session.login(UserType::User, Some(&pin(uri)?)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _)) => {
            Err(HsmError::BadPin(uri.token.clone()))
        }
        Err(e) => Err(HsmError::Token { token: uri.token.clone(), why: e.to_string() }),
    }
}

/// A logged-in session on the token the URI names.
fn session(uri: &Pkcs11Uri, rw: bool) -> Result<Session, HsmError> {
    let m = module(&module_path(uri))?;
    let slot = slot_of(&m, &uri.token)?;
    let token = |e: CkError| HsmError::Token { token: uri.token.clone(), why: e.to_string() };
    let session = if rw { m.open_rw_session(slot) } else { m.open_ro_session(slot) }.map_err(token)?;
    login(&session, uri)?;
    Ok(session)
}

/// The objects of `class` labelled as the URI says (and of its id, if any).
fn find(session: &Session, uri: &Pkcs11Uri, class: ObjectClass) -> Result<Vec<ObjectHandle>, HsmError> {
    let mut template = vec![
        Attribute::Class(class),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Label(uri.object.as_bytes().to_vec()),
    ];
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    session.find_objects(&template).map_err(|e| HsmError::Token { token: uri.token.clone(), why: e.to_string() })
}

/// The 32 public-key bytes of a `CKA_EC_POINT`: a DER OCTET STRING around
/// them (PKCS#11 3.0), or the bare bytes some tokens give.
fn ec_point(value: &[u8]) -> Option<[u8; 32]> {
    match value {
        [0x04, 32, rest @ ..] if rest.len() == 32 => rest.try_into().ok(),
        bare if bare.len() == 32 => bare.try_into().ok(),
        _ => None,
    }
}

/// The public key of the token's public-key object the URI names.
fn public_of(session: &Session, uri: &Pkcs11Uri) -> Result<PublicKey, HsmError> {
    let token = |why: String| HsmError::Token { token: uri.token.clone(), why };
    let found = find(session, uri, ObjectClass::PUBLIC_KEY)?;
    let [handle] = found.as_slice() else {
        return Err(HsmError::NoKey { token: uri.token.clone(), object: uri.object.clone(), found: found.len() });
    };
    let attrs = session.get_attributes(*handle, &[AttributeType::EcPoint]).map_err(|e| token(e.to_string()))?;
    let point = attrs
        .iter()
        .find_map(|a| if let Attribute::EcPoint(p) = a { ec_point(p) } else { None })
        .ok_or_else(|| token(format!("the public key {:?} has no Ed25519 point", uri.object)))?;
    PublicKey::from_bytes(&point).map_err(|e| token(format!("the public key {:?}: {e}", uri.object)))
}

/// An Ed25519 key in a PKCS#11 token: it signs on request; its private half
/// never leaves the token.
pub struct Pkcs11Key {
    uri: Pkcs11Uri,
    public: PublicKey,
    session: Mutex<(Session, ObjectHandle)>,
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11Key(token {:?}, object {:?}, {})", self.uri.token, self.uri.object, self.public.key_id())
    }
}

impl Pkcs11Key {
    /// Opens the key the URI names: loads the module, finds the token, logs
    /// in, finds exactly one Ed25519 private key and its public key.
    pub fn open(uri: &Pkcs11Uri) -> Result<Pkcs11Key, HsmError> {
        let session = session(uri, false)?;
        let public = public_of(&session, uri)?;
        let found = find(&session, uri, ObjectClass::PRIVATE_KEY)?;
        let [handle] = found.as_slice() else {
            return Err(HsmError::NoKey { token: uri.token.clone(), object: uri.object.clone(), found: found.len() });
        };
        let key = Pkcs11Key { uri: uri.clone(), public, session: Mutex::new((session, *handle)) };
        // Proves the pair: a signature by the private key verifies under
        // the public key read beside it.
        let probe = b"covenant pkcs11 key check";
        let sig = key.try_sign(probe).map_err(|e| HsmError::Token { token: uri.token.clone(), why: e.0 })?;
        key.public.verify(probe, &sig).map_err(|_| HsmError::Token {
            token: uri.token.clone(),
            why: format!("the private and public keys labelled {:?} are not a pair", uri.object),
        })?;
        Ok(key)
    }

    /// Opens the key a URI's text names.
    pub fn open_text(text: &str) -> Result<Arc<Pkcs11Key>, HsmError> {
        Ok(Arc::new(Pkcs11Key::open(&Pkcs11Uri::parse(text)?)?))
    }
}

impl Signer for Pkcs11Key {
    fn public(&self) -> PublicKey {
        self.public
    }

    fn try_sign(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        let guard = self.session.lock().map_err(|_| SignError("the token session's lock is poisoned".into()))?;
        let (session, key) = (&guard.0, guard.1);
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let signed = match session.sign(&mechanism, key, message) {
            Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => {
                login(session, &self.uri).map_err(|e| SignError(e.to_string()))?;
                session.sign(&mechanism, key, message)
            }
            other => other,
        };
        let sig = signed.map_err(|e| SignError(format!("token {:?}: {e}", self.uri.token)))?;
        sig.as_slice()
            .try_into()
            .map_err(|_| SignError(format!("token {:?} gave a {}-byte signature, not 64", self.uri.token, sig.len())))
    }
}

/// Makes an Ed25519 key pair in the token the URI names, labelled (and
/// with the id) it gives: the private key sensitive, never extractable,
/// for signing only. Returns its public key. Refuses a label already used.
pub fn generate(uri: &Pkcs11Uri) -> Result<PublicKey, HsmError> {
    let session = session(uri, true)?;
    let existing =
        find(&session, uri, ObjectClass::PRIVATE_KEY)?.len() + find(&session, uri, ObjectClass::PUBLIC_KEY)?.len();
    if existing > 0 {
        return Err(HsmError::Exists { token: uri.token.clone(), object: uri.object.clone() });
    }
    let label = Attribute::Label(uri.object.as_bytes().to_vec());
    let mut public =
        vec![Attribute::Token(true), Attribute::EcParams(ED25519_OID.to_vec()), Attribute::Verify(true), label.clone()];
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        label,
    ];
    if let Some(id) = &uri.id {
        public.push(Attribute::Id(id.clone()));
        private.push(Attribute::Id(id.clone()));
    }
    session
        .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)
        .map_err(|e| HsmError::Token { token: uri.token.clone(), why: format!("making the key: {e}") })?;
    public_of(&session, uri)
}

/// Whether `text` is a PKCS#11 URI rather than a file's path.
pub fn is_uri(text: &str) -> bool {
    text.starts_with("pkcs11:")
}
