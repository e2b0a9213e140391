//! What the read side says about the ledger, in words: an entry's one-line
//! summary (the history of a subject), a proposal's change, a case's state.
//! Pure, over bodies and facts; the server's queries, the CLI and the
//! console show these strings as they are.
//!
//! A summary is built from ids, versions, levels and times only, never
//! from free text (an action's `why`, a signal's summary, a finding), so it
//! carries nothing the body's reader rules would not already show, and no
//! text a customer or reporter wrote.

use crate::envelope::Envelope;
use crate::statements::{
    ActionKind, AdminAction, CaseState, Decision, Determination, EndUseAttestation, FieldVerification, InTotoStatement,
    InstallReport, MisuseSignal, Payload, ReleaseManifest, RootMetadata, SuspensionLevel, SuspensionTarget, Verdict,
    VerificationResult,
};

use crate::state::ProposalKind;

/// A case state as its payload spells it (`received`, …, `closed`).
pub fn case_state_name(state: CaseState) -> &'static str {
    match state {
        CaseState::Received => "received",
        CaseState::Triaged => "triaged",
        CaseState::Investigating => "investigating",
        CaseState::Determined => "determined",
        CaseState::Remediation => "remediation",
        CaseState::Verified => "verified",
        CaseState::Closed => "closed",
    }
}

/// A determination as its payload spells it.
pub fn determination_name(d: Determination) -> &'static str {
    match d {
        Determination::Unsubstantiated => "unsubstantiated",
        Determination::Inconclusive => "inconclusive",
        Determination::Substantiated => "substantiated",
    }
}

fn target_name(target: &SuspensionTarget) -> String {
    match target {
        SuspensionTarget::Customer(id) => format!("customer {id}"),
        SuspensionTarget::Deployment(id) => format!("deployment {id}"),
    }
}

/// What a proposal would change, split for a table and in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `suspension`, `waiver`, `security-fix`, `contract`, `licence`,
    /// `case-move`, `deployment`, `identity`, `revocation` or `compromise`.
    pub kind: &'static str,
    /// The customer, deployment, case or certificate it concerns.
    pub target: String,
    /// What holds now (a level, a case state; empty where nothing does).
    pub from: String,
    /// What would hold once approved.
    pub to: String,
    /// The whole change in one sentence.
    pub words: String,
}

/// What `kind` would change once approved; `release` names a release by
/// its digest (`product version`) where the caller knows it.
pub fn change(kind: &ProposalKind, release: impl Fn(&crate::digest::Sha256Digest) -> Option<String>) -> Change {
    let c = |kind, target: String, from: String, to: String, words: String| Change { kind, target, from, to, words };
    match kind {
        ProposalKind::Suspension { target, level, from } => c(
            "suspension",
            target_name(target),
            from.to_string(),
            level.to_string(),
            if *level == SuspensionLevel::None {
                format!("lift the suspension of {} (from {from} to none)", target_name(target))
            } else {
                format!("set the suspension of {} from {from} to {level}", target_name(target))
            },
        ),
        ProposalKind::Waiver { deployment, condition, until } => c(
            "waiver",
            format!("deployment {deployment}"),
            String::new(),
            format!("{condition} waived until {until}"),
            format!("waive condition {condition} for deployment {deployment} until {until}"),
        ),
        ProposalKind::SecurityFix { deployment, release: digest } => {
            let named = release(digest).map_or_else(|| digest.to_string(), |n| format!("{n} ({digest})"));
            c(
                "security-fix",
                format!("deployment {deployment}"),
                String::new(),
                format!("release {named}"),
                format!("let security-fix release {named} through to deployment {deployment} under L2"),
            )
        }
        ProposalKind::Contract { contract, relaxes } => c(
            "contract",
            format!("customer {}", contract.customer),
            if contract.version > 1 { format!("version {}", contract.version - 1) } else { String::new() },
            format!("version {}", contract.version),
            if relaxes.is_empty() {
                format!("set contract {} version {} for customer {}", contract.id, contract.version, contract.customer)
            } else {
                format!(
                    "set contract {} version {} for customer {}, which relaxes: {}",
                    contract.id,
                    contract.version,
                    contract.customer,
                    relaxes.join("; ")
                )
            },
        ),
        ProposalKind::Licence { licence, from, relaxes } => c(
            "licence",
            format!("customer {}", licence.customer),
            from.as_ref().map(|l| format!("{} until {}", l.versions, l.expires)).unwrap_or_default(),
            format!("{} until {}", licence.versions, licence.expires),
            format!(
                "record licence {} of customer {} (versions {}, until {}){}",
                licence.id,
                licence.customer,
                licence.versions,
                licence.expires,
                if relaxes.is_empty() { String::new() } else { format!(", which relaxes: {}", relaxes.join("; ")) }
            ),
        ),
        ProposalKind::CaseMove { case, to, from, .. } => c(
            "case-move",
            format!("case {case}"),
            case_state_name(*from).to_owned(),
            case_state_name(*to).to_owned(),
            format!("move case {case} from {} to {}", case_state_name(*from), case_state_name(*to)),
        ),
        ProposalKind::Deployment { deployment, held } => c(
            "deployment",
            format!("deployment {}", deployment.id),
            String::new(),
            format!("registered for customer {}", deployment.customer),
            format!(
                "register deployment {} of customer {} ({} {} at {}/{}): {held}",
                deployment.id,
                deployment.customer,
                deployment.product,
                deployment.installed_version,
                deployment.site.country,
                deployment.site.site_id
            ),
        ),
        ProposalKind::Identity { identity, why, .. } => c(
            "identity",
            format!("{} {}", identity.role, identity.subject),
            String::new(),
            "registered".to_owned(),
            format!("register a {} identity for {}: {why}", identity.role, identity.subject),
        ),
        ProposalKind::Revocation { certificate_sha256, compromised_since } => c(
            "revocation",
            format!("certificate {certificate_sha256}"),
            "registered".to_owned(),
            "revoked".to_owned(),
            match compromised_since {
                Some(t) => format!("revoke admin certificate {certificate_sha256}, compromised since {t}"),
                None => format!("revoke admin certificate {certificate_sha256}"),
            },
        ),
        ProposalKind::Compromise { certificate_sha256, since, voids } => c(
            "compromise",
            format!("certificate {certificate_sha256}"),
            String::new(),
            format!("compromised since {since}"),
            format!(
                "void what certificate {certificate_sha256}'s key signed since {since} ({voids} attestations and \
                 verifications)"
            ),
        ),
    }
}

/// An entry's summary in one line, from its body alone (the history of a
/// subject). A body that does not parse is summarised as such.
pub fn summary(body: &[u8]) -> String {
    summarise(body).unwrap_or_else(|| "an entry whose body could not be read".to_owned())
}

fn summarise(body: &[u8]) -> Option<String> {
    let env = Envelope::parse(body).ok()?;
    let payload = env.payload();
    Some(match env.payload_type() {
        RootMetadata::PAYLOAD_TYPE => {
            let root = RootMetadata::parse(payload).ok()?;
            format!("root version {} (expires {})", root.version, root.expires)
        }
        ReleaseManifest::PAYLOAD_TYPE => {
            let m = ReleaseManifest::parse(payload).ok()?;
            format!("release {} {} published", m.product, m.version)
        }
        AdminAction::PAYLOAD_TYPE => action(&AdminAction::parse(payload).ok()?.action),
        MisuseSignal::PAYLOAD_TYPE => {
            let s = MisuseSignal::parse(payload).ok()?;
            match s.about.deployment {
                Some(d) => format!("misuse signal about deployment {d} of customer {}", s.about.customer),
                None => format!("misuse signal about customer {}", s.about.customer),
            }
        }
        Decision::PAYLOAD_TYPE => {
            let d = Decision::parse(payload).ok()?;
            match d.verdict {
                Verdict::Grant => format!(
                    "grant to {}{}",
                    d.deployment,
                    d.expires_at.map(|t| format!(", valid until {t}")).unwrap_or_default()
                ),
                Verdict::Withhold => {
                    let unmet: Vec<&str> = d
                        .conditions
                        .iter()
                        .filter(|c| c.status == crate::statements::ConditionStatus::Unmet)
                        .map(|c| c.condition.as_str())
                        .collect();
                    let mut why = Vec::new();
                    if !unmet.is_empty() {
                        why.push(format!("unmet: {}", unmet.join(", ")));
                    }
                    if d.suspension != SuspensionLevel::None {
                        why.push(format!("suspension {}", d.suspension));
                    }
                    if why.is_empty() {
                        format!("withhold from {}", d.deployment)
                    } else {
                        format!("withhold from {} ({})", d.deployment, why.join("; "))
                    }
                }
            }
        }
        crate::statements::RestoreLoss::PAYLOAD_TYPE => {
            let l = crate::statements::RestoreLoss::parse(payload).ok()?;
            let lost = l.witnessed_size - l.restored_size;
            format!(
                "restored from a backup of {} entries, losing {lost} entr{} a witness had cosigned (up to size {}, {}): {}",
                l.restored_size,
                if lost == 1 { "y" } else { "ies" },
                l.witnessed_size,
                crate::text::Untrusted(&l.evidence),
                crate::text::Untrusted(&l.why)
            )
        }
        InstallReport::PAYLOAD_TYPE => {
            let r = InstallReport::parse(payload).ok()?;
            format!(
                "{} reports {} {} → {} (grant {})",
                r.deployment,
                crate::state::outcome_name(r.outcome),
                r.from_version,
                r.to_version,
                r.grant_index
            )
        }
        "application/vnd.in-toto+json" => {
            if let Ok(s) = InTotoStatement::<EndUseAttestation>::parse(payload) {
                let deployments: Vec<&str> = s.deployments().collect();
                format!(
                    "end-use attestation by {} for {} deployment{}, valid {} to {}",
                    s.predicate.customer,
                    deployments.len(),
                    if deployments.len() == 1 { "" } else { "s" },
                    s.predicate.valid_from,
                    s.predicate.valid_until
                )
            } else if let Ok(s) = InTotoStatement::<FieldVerification>::parse(payload) {
                let p = &s.predicate;
                let result = if p.result == VerificationResult::Pass { "pass" } else { "fail" };
                format!("field verification of {} dated {}: {result}", p.deployment, p.date)
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

fn action(a: &ActionKind) -> String {
    match a {
        ActionKind::Note { .. } => "note".to_owned(),
        ActionKind::IssueIdentity { role, subject, .. } => format!("{role} identity issued for {subject}"),
        ActionKind::RevokeIdentity { certificate_sha256, compromised_since } => match compromised_since {
            Some(t) => format!("certificate {certificate_sha256} revoked, compromised since {t}"),
            None => format!("certificate {certificate_sha256} revoked"),
        },
        ActionKind::CaseTransition { case, to, determination } => match determination {
            Some(d) => format!("case {case} moved to {} ({})", case_state_name(*to), determination_name(*d)),
            None => format!("case {case} moved to {}", case_state_name(*to)),
        },
        ActionKind::ProposeSuspension { target, level } => {
            format!("suspension of {} to {level} proposed", target_name(target))
        }
        ActionKind::Approve { proposal } => format!("approval of proposal {proposal}"),
        ActionKind::RegisterCustomer { customer, country, .. } => format!("customer {customer} ({country}) registered"),
        ActionKind::RegisterDeployment { deployment, customer, product, site, provisioned_version } => format!(
            "deployment {deployment} of {customer} registered: {product} {provisioned_version} at {}/{}",
            site.country, site.site_id
        ),
        ActionKind::SetContract { contract } => {
            format!("contract {} version {} for {}", contract.id, contract.version, contract.customer)
        }
        ActionKind::ProposeWaiver { deployment, condition, until } => {
            format!("waiver of {condition} for {deployment} until {until} proposed")
        }
        ActionKind::ProposeSecurityFix { deployment, release } => {
            format!("security fix {release} for {deployment} proposed")
        }
        ActionKind::ListDeniedParty { party } => format!("denied-party list {} entry", party.list),
        ActionKind::RecordLicence { licence } => {
            format!(
                "licence {} of {} (versions {}, until {})",
                licence.id, licence.customer, licence.versions, licence.expires
            )
        } // `ActionKind` is `#[non_exhaustive]` only across crates; here every
          // kind is named, and a new one must be summarised above.
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_the_payload_spellings() {
        use CaseState as S;
        for s in [S::Received, S::Triaged, S::Investigating, S::Determined, S::Remediation, S::Verified, S::Closed] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", case_state_name(s)));
        }
        use Determination as D;
        for d in [D::Unsubstantiated, D::Inconclusive, D::Substantiated] {
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{}\"", determination_name(d)));
        }
    }

    #[test]
    fn a_suspension_says_from_and_to_and_a_security_fix_names_its_release() {
        let kind = ProposalKind::Suspension {
            target: SuspensionTarget::Customer("min-x".into()),
            level: SuspensionLevel::L2,
            from: SuspensionLevel::L1,
        };
        let c = change(&kind, |_| None);
        assert_eq!((c.kind, c.from.as_str(), c.to.as_str()), ("suspension", "L1", "L2"));
        assert_eq!(c.words, "set the suspension of customer min-x from L1 to L2");
        let digest = crate::digest::Sha256Digest::of(b"m");
        let kind = ProposalKind::SecurityFix { deployment: "lim-07".into(), release: digest };
        let c = change(&kind, |d| (*d == digest).then(|| "lim 1.2.1".to_owned()));
        assert!(c.words.starts_with("let security-fix release lim 1.2.1 ("), "{}", c.words);
    }

    #[test]
    fn a_body_that_is_not_an_entry_is_summarised_as_such() {
        assert_eq!(summary(b"not json"), "an entry whose body could not be read");
    }
}
