//! Who may read what: which subjects a caller is entitled to (and so gets
//! the subject keys of), and whose entry bodies it may read. One pure
//! function each, over values the server resolves from the state, so that
//! `LedgerService.GetEntries`, `GetSubjectKeys`, `GetVerdict` and the scope
//! of a signal all answer from the same rule.
//!
//! Least privilege: each role reads the bodies its work needs, and nothing
//! that could name a misuse reporter to the customer reported. The whole
//! table, role by entry kind, is `tests/tests/visibility.rs`.

use crate::ledger::EntryKind;
use crate::state::State;
use crate::statements::IdentityRole;

/// The caller, as the ledger registered it.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    /// Its role.
    pub role: IdentityRole,
    /// Its subject id (a person's id, a customer id or a deployment id).
    pub subject: &'a str,
    /// For an auditor: the customers in scope (`None`: every customer).
    pub scope: Option<&'a [String]>,
}

/// A subject an entry concerns, as the state knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A registered customer.
    Customer(&'a str),
    /// A registered deployment, with the customer it belongs to.
    Deployment {
        /// Its id.
        id: &'a str,
        /// Its customer.
        customer: &'a str,
    },
    /// Anything else: a person's identity subject.
    Other(&'a str),
}

impl<'a> Subject<'a> {
    /// What `id` is in `state`: a deployment, a customer, or another subject.
    pub fn resolve(state: &'a State, id: &'a str) -> Subject<'a> {
        if let Some(d) = state.deployment(id) {
            Subject::Deployment { id, customer: &d.customer }
        } else if state.customer(id).is_some() {
            Subject::Customer(id)
        } else {
            Subject::Other(id)
        }
    }
}

/// Whether `viewer` is entitled to `subject`: holds its subject key, finds
/// its entries, and reads its verdicts. Admins and full-scope auditors:
/// every subject. A scoped auditor: its customers and their deployments (a
/// deployment is in scope when its customer is). A customer: itself and its
/// deployments. A deployment: itself. Everyone: its own subject id.
pub fn entitled(viewer: &Viewer<'_>, subject: &Subject<'_>) -> bool {
    let in_scope = |customer: &str| viewer.scope.is_none_or(|scope| scope.iter().any(|c| c == customer));
    // Its own subject, of its own kind: a customer is its customer id, a
    // deployment its deployment id, a person (admin, engineer, auditor,
    // reporter) a person's id. A person whose id happens to spell a
    // customer's or deployment's (a reporter naming itself `min-x`) is not
    // that customer.
    let own = match subject {
        Subject::Customer(id) => viewer.role == IdentityRole::Customer && *id == viewer.subject,
        Subject::Deployment { id, .. } => viewer.role == IdentityRole::Deployment && *id == viewer.subject,
        Subject::Other(id) => {
            !matches!(viewer.role, IdentityRole::Customer | IdentityRole::Deployment) && *id == viewer.subject
        }
    };
    own || match viewer.role {
        IdentityRole::Admin => true,
        IdentityRole::Auditor => match subject {
            Subject::Customer(c) | Subject::Deployment { customer: c, .. } => in_scope(c),
            // Person subjects are the vendor's staff, in no customer's scope.
            Subject::Other(_) => viewer.scope.is_none(),
        },
        IdentityRole::Customer => {
            matches!(subject, Subject::Deployment { customer, .. } if *customer == viewer.subject)
        }
        IdentityRole::Deployment | IdentityRole::Engineer | IdentityRole::Reporter => false,
    }
}

/// Whether `viewer` may read the body of an entry of `kind` concerning
/// `subjects`, whose body was signed by `signer` (the role and subject of
/// the identity whose key signed it, for the kinds one person or device
/// signs). Every registered caller reads every header: headers name no
/// subject (see [`crate::ledger`]) and the tiles publish them anyway.
///
/// - Admins and full-scope auditors read every body.
/// - Root and release bodies are the trust material every verifier needs:
///   everyone reads them.
/// - A misuse signal: besides those, only its reporter (the engineer,
///   auditor or reporter whose key signed it). Not a scoped auditor, not the customer:
///   the body names the reporter's key, which is the public actor of their
///   other entries.
/// - Entries with no subject (revocations, notes, case moves, approvals,
///   denied parties) say nothing a narrower role needs, and case moves lead
///   to signals: admins and full-scope auditors only.
/// - A field verification: scoped auditors entitled to its deployment, and
///   the engineer who signed it. The customer learns its effect from its
///   decisions; the body is the engineer's report.
/// - A scoped auditor reads every other body whose subjects are all
///   entitled to it.
/// - A customer, its registration, deployments, contract, licences,
///   attestations, its keys' registrations, and its deployments' decisions
///   and reports; not suspensions, waivers or security fixes, whose reasons
///   may cite a misuse report (it sees their effect in its decisions).
/// - A deployment, its key's registration, its decisions and its reports.
/// - An engineer, its own registration and what it signed (verifications,
///   signals).
/// - A reporter (an outside party), its own registration and the signals it
///   signed.
///
/// The read side's case rows are the one place a caller learns what Case
/// entries say without their bodies: a scoped auditor for its customers'
/// cases, an engineer, auditor or reporter for the cases its signals
/// opened; state and times only, never a reason (`docs/ledger.md`, "The
/// read side").
pub fn body_visible(
    viewer: &Viewer<'_>,
    kind: EntryKind,
    subjects: &[Subject<'_>],
    signer: Option<(IdentityRole, &str)>,
) -> bool {
    let full = viewer.role == IdentityRole::Admin || (viewer.role == IdentityRole::Auditor && viewer.scope.is_none());
    if full || matches!(kind, EntryKind::Root | EntryKind::Release) {
        return true;
    }
    let signed_by_viewer = signer.is_some_and(|(role, subject)| role == viewer.role && subject == viewer.subject);
    let all_entitled = !subjects.is_empty() && subjects.iter().all(|s| entitled(viewer, s));
    match kind {
        EntryKind::Signal => signed_by_viewer,
        EntryKind::Verification => signed_by_viewer || (viewer.role == IdentityRole::Auditor && all_entitled),
        EntryKind::Revocation
        | EntryKind::Note
        | EntryKind::Case
        | EntryKind::CaseClosure
        | EntryKind::Approval
        | EntryKind::DeniedParty => false,
        _ => {
            all_entitled
                && match viewer.role {
                    IdentityRole::Admin | IdentityRole::Auditor => true,
                    IdentityRole::Customer => matches!(
                        kind,
                        EntryKind::Identity
                            | EntryKind::Customer
                            | EntryKind::Deployment
                            | EntryKind::Contract
                            | EntryKind::Attestation
                            | EntryKind::Licence
                            | EntryKind::Grant
                            | EntryKind::Withhold
                            | EntryKind::Report
                    ),
                    IdentityRole::Deployment => {
                        matches!(kind, EntryKind::Identity | EntryKind::Grant | EntryKind::Withhold | EntryKind::Report)
                    }
                    IdentityRole::Engineer | IdentityRole::Reporter => kind == EntryKind::Identity,
                }
        }
    }
}

/// Every subject `viewer` is entitled to, in order: of the registered
/// customers and deployments and every identity's subject (what
/// `LedgerService.GetSubjectKeys` hands out keys for).
pub fn entitled_subjects<'a>(state: &'a State, viewer: &Viewer<'_>) -> Vec<&'a str> {
    let facts = state.facts();
    let candidates: std::collections::BTreeSet<&'a str> = facts
        .customers()
        .map(|c| c.id.as_str())
        .chain(facts.deployments().map(|d| d.id.as_str()))
        .chain(state.identities().map(|(_, i)| i.subject.as_str()))
        .collect();
    let mut out: Vec<&'a str> =
        candidates.into_iter().filter(|id| entitled(viewer, &Subject::resolve(state, id))).collect();
    // A deployment proposed for a held customer and not (yet) registered
    // has a registration entry tagged with it, which the customer's
    // evidence pack must account for: its key goes to those entitled to the
    // customer, unless the id is also a person's (keys are per id).
    let people: std::collections::BTreeSet<&str> = state
        .identities()
        .filter(|(_, i)| !matches!(i.role, IdentityRole::Customer | IdentityRole::Deployment))
        .map(|(_, i)| i.subject.as_str())
        .collect();
    for (_, p) in facts.proposals() {
        if let crate::state::ProposalKind::Deployment { deployment: d, .. } = &p.kind
            && facts.deployment(&d.id).is_none()
            && !people.contains(d.id.as_str())
            && entitled(viewer, &Subject::Deployment { id: &d.id, customer: &d.customer })
        {
            out.push(&d.id);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_is_in_scope_when_its_customer_is() {
        let scope = ["min-x".to_owned()];
        let auditor = Viewer { role: IdentityRole::Auditor, subject: "aud-x", scope: Some(&scope) };
        let lim07 = Subject::Deployment { id: "lim-07", customer: "min-x" };
        let lim08 = Subject::Deployment { id: "lim-08", customer: "min-y" };
        assert!(entitled(&auditor, &Subject::Customer("min-x")));
        assert!(entitled(&auditor, &lim07));
        assert!(!entitled(&auditor, &lim08));
        assert!(!entitled(&auditor, &Subject::Customer("min-y")));
        assert!(!entitled(&auditor, &Subject::Other("eng-1")));
        assert!(entitled(&auditor, &Subject::Other("aud-x")), "its own id");
        let customer = Viewer { role: IdentityRole::Customer, subject: "min-x", scope: None };
        assert!(entitled(&customer, &lim07) && !entitled(&customer, &lim08));
        let device = Viewer { role: IdentityRole::Deployment, subject: "lim-07", scope: None };
        assert!(entitled(&device, &lim07) && !entitled(&device, &Subject::Customer("min-x")));
    }

    #[test]
    fn a_person_whose_id_spells_a_customers_is_not_that_customer() {
        let customer = Subject::Customer("min-x");
        let device = Subject::Deployment { id: "lim-07", customer: "min-x" };
        for role in [IdentityRole::Reporter, IdentityRole::Engineer] {
            let as_customer = Viewer { role, subject: "min-x", scope: None };
            assert!(!entitled(&as_customer, &customer), "{role} named min-x");
            let as_device = Viewer { role, subject: "lim-07", scope: None };
            assert!(!entitled(&as_device, &device), "{role} named lim-07");
            assert!(entitled(&as_customer, &Subject::Other("min-x")), "its own person id");
        }
        let scoped = ["min-y".to_owned()];
        let auditor = Viewer { role: IdentityRole::Auditor, subject: "min-x", scope: Some(&scoped) };
        assert!(!entitled(&auditor, &customer), "a scoped auditor named min-x");
        // The customer and the device are still their own subjects.
        assert!(entitled(&Viewer { role: IdentityRole::Customer, subject: "min-x", scope: None }, &customer));
        assert!(entitled(&Viewer { role: IdentityRole::Deployment, subject: "lim-07", scope: None }, &device));
    }

    #[test]
    fn only_the_reporter_and_full_readers_read_a_signal() {
        let subjects = [Subject::Customer("min-x"), Subject::Deployment { id: "lim-07", customer: "min-x" }];
        let reporter = Some((IdentityRole::Engineer, "eng-1"));
        let scope = ["min-x".to_owned()];
        let readers = [
            (Viewer { role: IdentityRole::Admin, subject: "admin1", scope: None }, true),
            (Viewer { role: IdentityRole::Auditor, subject: "auditor", scope: None }, true),
            (Viewer { role: IdentityRole::Auditor, subject: "aud-x", scope: Some(&scope) }, false),
            (Viewer { role: IdentityRole::Customer, subject: "min-x", scope: None }, false),
            (Viewer { role: IdentityRole::Deployment, subject: "lim-07", scope: None }, false),
            (Viewer { role: IdentityRole::Engineer, subject: "eng-1", scope: None }, true),
            (Viewer { role: IdentityRole::Engineer, subject: "eng-2", scope: None }, false),
        ];
        for (viewer, want) in readers {
            assert_eq!(body_visible(&viewer, EntryKind::Signal, &subjects, reporter), want, "{viewer:?}");
        }
    }
}
