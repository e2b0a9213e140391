//! Contracts and the facts admins record beside them (`docs/policy.md`,
//! "Contracts"): a contract binds a customer's deployments to typed
//! conditions; export licences and denied-party listings are facts the
//! conditions read.

use serde::{Deserialize, Serialize};

use super::{CaseState, StatementError, check_country, check_id, check_text, invalid};
use crate::digest::Timestamp;
use crate::statements::VerificationMethod;

/// The name of a contract condition: the one place the names are spelled
/// (contracts' `condition` tags, decisions' condition results, waivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConditionName {
    /// `end_use_attested`.
    EndUseAttested,
    /// `field_verified`.
    FieldVerified,
    /// `site_bound`.
    SiteBound,
    /// `integrity_match`.
    IntegrityMatch,
    /// `licence_valid`.
    LicenceValid,
    /// `denied_party_clear`.
    DeniedPartyClear,
    /// `no_open_case`.
    NoOpenCase,
}

impl ConditionName {
    /// Every condition, in the order decisions report them.
    pub const ALL: [ConditionName; 7] = [
        ConditionName::EndUseAttested,
        ConditionName::FieldVerified,
        ConditionName::SiteBound,
        ConditionName::IntegrityMatch,
        ConditionName::LicenceValid,
        ConditionName::DeniedPartyClear,
        ConditionName::NoOpenCase,
    ];

    /// The name as contracts, decisions and waivers spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionName::EndUseAttested => "end_use_attested",
            ConditionName::FieldVerified => "field_verified",
            ConditionName::SiteBound => "site_bound",
            ConditionName::IntegrityMatch => "integrity_match",
            ConditionName::LicenceValid => "licence_valid",
            ConditionName::DeniedPartyClear => "denied_party_clear",
            ConditionName::NoOpenCase => "no_open_case",
        }
    }
}

impl std::fmt::Display for ConditionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no contract condition's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a condition's name")]
pub struct UnknownCondition(pub String);

impl std::str::FromStr for ConditionName {
    type Err = UnknownCondition;
    fn from_str(s: &str) -> Result<Self, UnknownCondition> {
        ConditionName::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCondition(s.chars().take(64).collect()))
    }
}

/// One typed condition of a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "condition", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// A valid end-use attestation signed by a registered key of the customer
    /// covers the deployment, is inside its validity period, is younger than
    /// `max_age_days`, and declares an allowed end use.
    EndUseAttested {
        /// Oldest acceptable attestation, in days since it was recorded.
        max_age_days: u32,
        /// Allowed end-use categories (empty: any).
        #[serde(default)]
        allowed_end_uses: Vec<String>,
    },
    /// A passing field verification by a registered engineer references the
    /// current attestation and is young enough.
    FieldVerified {
        /// Oldest acceptable verification, in days since it was recorded.
        max_age_days: u32,
        /// Accepted methods (empty: any).
        #[serde(default)]
        methods: Vec<VerificationMethod>,
    },
    /// The attested and verified site is allowed.
    SiteBound {
        /// Allowed countries (empty: any).
        #[serde(default)]
        allowed_countries: Vec<String>,
        /// Allowed site ids (empty: any).
        #[serde(default)]
        allowed_site_ids: Vec<String>,
    },
    /// The software the agent reports matches the installed release's
    /// manifest, and its configuration the last field verification.
    IntegrityMatch,
    /// The export licence is unexpired and covers the release's version.
    LicenceValid {
        /// The licence id.
        licence: String,
    },
    /// The end user is on no entry of this denied-party list.
    DeniedPartyClear {
        /// The list's name.
        list: String,
    },
    /// No open misuse case against the customer or deployment has reached
    /// `from_state`.
    NoOpenCase {
        /// The first state that blocks.
        from_state: CaseState,
    },
}

impl Condition {
    /// Which condition it is.
    pub fn kind(&self) -> ConditionName {
        match self {
            Condition::EndUseAttested { .. } => ConditionName::EndUseAttested,
            Condition::FieldVerified { .. } => ConditionName::FieldVerified,
            Condition::SiteBound { .. } => ConditionName::SiteBound,
            Condition::IntegrityMatch => ConditionName::IntegrityMatch,
            Condition::LicenceValid { .. } => ConditionName::LicenceValid,
            Condition::DeniedPartyClear { .. } => ConditionName::DeniedPartyClear,
            Condition::NoOpenCase { .. } => ConditionName::NoOpenCase,
        }
    }

    /// The condition's name as decisions report it.
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    fn validate(&self) -> Result<(), StatementError> {
        match self {
            Condition::EndUseAttested { max_age_days, allowed_end_uses } => {
                if *max_age_days == 0 {
                    return Err(invalid("contract.conditions.max_age_days", "must be at least 1"));
                }
                allowed_end_uses.iter().try_for_each(|u| check_text("contract.conditions.allowed_end_uses", u))
            }
            Condition::FieldVerified { max_age_days, .. } => {
                if *max_age_days == 0 {
                    return Err(invalid("contract.conditions.max_age_days", "must be at least 1"));
                }
                Ok(())
            }
            Condition::SiteBound { allowed_countries, allowed_site_ids } => {
                allowed_countries.iter().try_for_each(|c| check_country("contract.conditions.allowed_countries", c))?;
                allowed_site_ids.iter().try_for_each(|s| check_id("contract.conditions.allowed_site_ids", s))
            }
            Condition::IntegrityMatch => Ok(()),
            Condition::LicenceValid { licence } => check_id("contract.conditions.licence", licence),
            Condition::DeniedPartyClear { list } => check_id("contract.conditions.list", list),
            Condition::NoOpenCase { from_state } => {
                if *from_state == CaseState::Closed {
                    return Err(invalid("contract.conditions.from_state", "a closed case never blocks"));
                }
                Ok(())
            }
        }
    }
}

/// A contract: versioned, set by a signed admin action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// The contract id.
    pub id: String,
    /// Its version: 1, then one more per change.
    pub version: u64,
    /// The customer bound.
    pub customer: String,
    /// The deployments bound (empty: every deployment of the customer).
    #[serde(default)]
    pub deployments: Vec<String>,
    /// The conditions, each at most once.
    pub conditions: Vec<Condition>,
    /// How long a grant stands, in seconds.
    pub grant_validity_seconds: u32,
    /// Whom the customer contacts about a compliance review (shown to the
    /// customer when an open case withholds an update).
    pub compliance_contact: String,
}

impl Contract {
    pub(crate) fn validate(&self) -> Result<(), StatementError> {
        check_id("contract.id", &self.id)?;
        check_id("contract.customer", &self.customer)?;
        if self.version == 0 {
            return Err(invalid("contract.version", "starts at 1"));
        }
        self.deployments.iter().try_for_each(|d| check_id("contract.deployments", d))?;
        for (i, c) in self.conditions.iter().enumerate() {
            c.validate()?;
            if self.conditions[..i].iter().any(|o| o.name() == c.name()) {
                return Err(invalid("contract.conditions", "names a condition twice"));
            }
        }
        if !(60..=90 * 86_400).contains(&self.grant_validity_seconds) {
            return Err(invalid("contract.grant_validity_seconds", "must be between 60 seconds and 90 days"));
        }
        check_text("contract.compliance_contact", &self.compliance_contact)
    }

    /// Whether the contract binds this deployment of its customer.
    pub fn covers(&self, deployment: &str) -> bool {
        self.deployments.is_empty() || self.deployments.iter().any(|d| d == deployment)
    }
}

/// What `new` relaxes relative to `old`, each in words; empty when `new`
/// only tightens or keeps every condition (a pure function, so the fold and
/// the officer's tools agree on what needs the admin threshold).
///
/// A relaxation: a condition dropped; a larger `max_age_days`; an allowed
/// list (end uses, methods, countries, site ids) that admits something the
/// old one did not (an empty list admits anything); another licence or
/// denied-party list; a later `from_state` for `no_open_case`; a longer
/// grant validity; covering a deployment the old version did not (a
/// deployment without a contract is withheld, so bringing one under a
/// contract is what a first contract is for it). Not a relaxation: a
/// condition added, a parameter narrowed, another compliance contact, a
/// deployment no longer covered (it gets nothing).
pub fn contract_relaxations(old: &Contract, new: &Contract) -> Vec<String> {
    // Whether `new` admits a value `old` did not (empty admits anything).
    fn wider<T: PartialEq>(old: &[T], new: &[T]) -> bool {
        !old.is_empty() && (new.is_empty() || new.iter().any(|v| !old.contains(v)))
    }
    let mut out = Vec::new();
    if wider(&old.deployments, &new.deployments) {
        out.push(if new.deployments.is_empty() {
            "covers every deployment of the customer instead of those listed".to_owned()
        } else {
            format!("covers deployments the old version did not ({})", new.deployments.join(", "))
        });
    }
    for before in &old.conditions {
        let name = before.name();
        let Some(after) = new.conditions.iter().find(|c| c.name() == name) else {
            out.push(format!("drops the condition {name}"));
            continue;
        };
        let mut longer = |what: &str, a: u32, b: u32| {
            if b > a {
                out.push(format!("{name}: {what} goes from {a} to {b}"));
            }
        };
        match (before, after) {
            (
                Condition::EndUseAttested { max_age_days: a, allowed_end_uses: ua },
                Condition::EndUseAttested { max_age_days: b, allowed_end_uses: ub },
            ) => {
                longer("max_age_days", *a, *b);
                if wider(ua, ub) {
                    out.push(format!("{name}: allows end uses the old version did not"));
                }
            }
            (
                Condition::FieldVerified { max_age_days: a, methods: ma },
                Condition::FieldVerified { max_age_days: b, methods: mb },
            ) => {
                longer("max_age_days", *a, *b);
                if wider(ma, mb) {
                    out.push(format!("{name}: accepts methods the old version did not"));
                }
            }
            (
                Condition::SiteBound { allowed_countries: ca, allowed_site_ids: sa },
                Condition::SiteBound { allowed_countries: cb, allowed_site_ids: sb },
            ) => {
                if wider(ca, cb) {
                    out.push(format!("{name}: allows countries the old version did not"));
                }
                if wider(sa, sb) {
                    out.push(format!("{name}: allows sites the old version did not"));
                }
            }
            (Condition::LicenceValid { licence: a }, Condition::LicenceValid { licence: b }) if a != b => {
                out.push(format!("{name}: names licence {b} instead of {a}"));
            }
            (Condition::DeniedPartyClear { list: a }, Condition::DeniedPartyClear { list: b }) if a != b => {
                out.push(format!("{name}: checks list {b} instead of {a}"));
            }
            (Condition::NoOpenCase { from_state: a }, Condition::NoOpenCase { from_state: b }) if b > a => {
                out.push(format!("{name}: blocks only from {b:?} instead of {a:?}"));
            }
            _ => {}
        }
    }
    if new.grant_validity_seconds > old.grant_validity_seconds {
        out.push(format!(
            "grant_validity_seconds goes from {} to {}",
            old.grant_validity_seconds, new.grant_validity_seconds
        ));
    }
    out
}

/// An export licence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Licence {
    /// The licence id (as the contract names it).
    pub id: String,
    /// The customer it was granted for.
    pub customer: String,
    /// The licensing authority, for people.
    pub authority: String,
    /// When it expires.
    pub expires: Timestamp,
    /// The release versions it covers (a semver requirement such as `>=1.0, <3`).
    pub versions: semver::VersionReq,
}

impl Licence {
    pub(crate) fn validate(&self) -> Result<(), StatementError> {
        check_id("licence.id", &self.id)?;
        check_id("licence.customer", &self.customer)?;
        check_text("licence.authority", &self.authority)
    }
}

/// One entry of a denied-party list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeniedParty {
    /// The list (`eu-sanctions`, `us-entity-list`).
    pub list: String,
    /// The party's legal name, as listed.
    pub legal_name: String,
    /// Its country.
    pub country: String,
}

impl DeniedParty {
    pub(crate) fn validate(&self) -> Result<(), StatementError> {
        check_id("party.list", &self.list)?;
        check_text("party.legal_name", &self.legal_name)?;
        check_country("party.country", &self.country)
    }

    /// Whether this listing names `legal_name` in `country` (names compared
    /// case-insensitively, with runs of whitespace as one space).
    pub fn matches(&self, legal_name: &str, country: &str) -> bool {
        fn norm(s: &str) -> String {
            s.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
        }
        self.country == country && norm(&self.legal_name) == norm(legal_name)
    }
}

/// What recording `new` in place of the licence `old` (same id) relaxes, in
/// words; empty when it only narrows or repeats it. A later expiry, a
/// version requirement that is not `old`'s with comparators added (a
/// requirement's comparators must all hold, so adding some can only
/// narrow; any other change may admit a version `old` did not, and which
/// one is not decided here), and another authority are relaxations. One
/// exception to "adding narrows": a pre-release version (`2.0.0-rc.1`)
/// matches a requirement only if one of its comparators names a
/// pre-release of the same major, minor and patch (the semver crate's
/// rule), so an added comparator with a pre-release label
/// (`>=2.0.0-rc.0`) can admit pre-releases `old` did not: it counts as a
/// widening too.
pub fn licence_relaxations(old: &Licence, new: &Licence) -> Vec<String> {
    let mut out = Vec::new();
    if new.expires > old.expires {
        out.push(format!("licence {}: expires on {} instead of {}", old.id, new.expires.date(), old.expires.date()));
    }
    let (was, is) = (&old.versions.comparators, &new.versions.comparators);
    let dropped = !was.iter().all(|c| is.contains(c));
    let admits_pre_releases = is.iter().any(|c| !c.pre.is_empty() && !was.contains(c));
    if dropped || admits_pre_releases {
        out.push(format!("licence {}: covers versions {} instead of {}", old.id, new.versions, old.versions));
    }
    if new.authority != old.authority {
        out.push(format!("licence {}: names authority {} instead of {}", old.id, new.authority, old.authority));
    }
    out
}
