//! Reach: what a resource *template* can meet in a policy, for filtering MCP lists.
//!
//! A tool's resource is a template (`api://crm/customers/{customer_id}`) whose placeholders
//! are filled from the call's arguments, each value one or more bytes without `/`, wildcards
//! or control characters. To show an agent only the tools it could call, the gateway asks two
//! questions of each policy glob, exactly:
//!
//! - [`Reach::meets`]: can the template produce *some* resource the glob matches?
//!   (L(template) ∩ L(glob) ≠ ∅)
//! - [`Reach::covers`]: does the glob match *every* resource the template can produce?
//!   (L(template) ⊆ L(glob)) — a deny that covers a whole tool hides it.
//!
//! Both are answered by walking the product of two anchored DFAs (regex-automata) from their
//! start states, one byte at a time, looking for a pair of states where, at the end of the
//! input, the template accepts and the glob does (meets) or does not (covers). Pure: no I/O.
//! The walk is bounded; past the bound the answer errs towards showing the tool (calls are
//! decided one by one anyway, so a shown tool is never an allowed one).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::util::start;
use regex_automata::{Anchored, util::syntax};

/// Most state pairs visited by one walk (each costs 256 transitions).
const MAX_PAIRS: usize = 20_000;
/// Largest DFA built for one pattern, bytes.
const MAX_DFA_BYTES: usize = 1 << 20;
/// Most memory the cached DFAs take; the cache is emptied when it would exceed it.
const MAX_CACHED_BYTES: usize = 32 << 20;

type Dfa = dense::DFA<Vec<u32>>;

/// Compiled DFAs of templates and globs, by regex, shared by every list filtered against one
/// snapshot.
#[derive(Default)]
pub struct Reach {
    dfas: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    map: HashMap<String, Option<Arc<Dfa>>>,
    bytes: usize,
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reach").finish_non_exhaustive()
    }
}

/// The regex (bytes, anchored) of a policy glob, as globset compiles it.
pub fn glob_regex(glob: &str) -> Option<String> {
    globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .ok()
        .map(|g| g.regex().to_string())
}

impl Reach {
    /// Whether the template (its regex, [`crate::proxy::route::ResourceTemplate::regex`]) can
    /// produce a resource `glob` matches. `true` when unsure.
    pub fn meets(&self, template_regex: &str, glob: &str) -> bool {
        let (Some(t), Some(g)) = (
            self.dfa(template_regex),
            glob_regex(glob).and_then(|r| self.dfa(&r)),
        ) else {
            return true;
        };
        walk(&t, &g, |t_match, g_match| t_match && g_match).unwrap_or(true)
    }

    /// Whether `glob` matches every resource the template can produce. `false` when unsure.
    pub fn covers(&self, template_regex: &str, glob: &str) -> bool {
        let (Some(t), Some(g)) = (
            self.dfa(template_regex),
            glob_regex(glob).and_then(|r| self.dfa(&r)),
        ) else {
            return false;
        };
        // Covered when no produced resource escapes the glob.
        !walk(&t, &g, |t_match, g_match| t_match && !g_match).unwrap_or(true)
    }

    fn dfa(&self, regex: &str) -> Option<Arc<Dfa>> {
        if let Ok(cache) = self.dfas.lock()
            && let Some(found) = cache.map.get(regex)
        {
            return found.clone();
        }
        let built = build(regex).map(Arc::new);
        if let Ok(mut cache) = self.dfas.lock() {
            let size = regex.len() + built.as_ref().map_or(0, |d| d.memory_usage());
            if cache.bytes + size > MAX_CACHED_BYTES {
                cache.map.clear();
                cache.bytes = 0;
            }
            cache.bytes += size;
            cache.map.insert(regex.to_string(), built.clone());
        }
        built
    }
}

fn build(regex: &str) -> Option<Dfa> {
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(MAX_DFA_BYTES))
                .determinize_size_limit(Some(MAX_DFA_BYTES)),
        )
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .build(regex)
        .ok()
}

/// Breadth-first over reachable state pairs; `Some(true)` when a pair satisfies `found` at the
/// end of input, `Some(false)` when none can, `None` past [`MAX_PAIRS`].
fn walk(a: &Dfa, b: &Dfa, found: impl Fn(bool, bool) -> bool) -> Option<bool> {
    let cfg = start::Config::new().anchored(Anchored::Yes);
    let sa = a.start_state(&cfg).ok()?;
    let sb = b.start_state(&cfg).ok()?;
    let mut seen = HashSet::new();
    let mut todo = VecDeque::new();
    seen.insert((sa, sb));
    todo.push_back((sa, sb));
    while let Some((x, y)) = todo.pop_front() {
        let end_a = a.is_match_state(a.next_eoi_state(x));
        let end_b = b.is_match_state(b.next_eoi_state(y));
        if found(end_a, end_b) {
            return Some(true);
        }
        for byte in 0..=255u8 {
            let nx = a.next_state(x, byte);
            if a.is_dead_state(nx) || a.is_quit_state(nx) {
                continue;
            }
            let ny = b.next_state(y, byte);
            if b.is_quit_state(ny) {
                continue;
            }
            if seen.insert((nx, ny)) {
                if seen.len() > MAX_PAIRS {
                    return None;
                }
                todo.push_back((nx, ny));
            }
        }
    }
    Some(false)
}

/// What a listed item resolves to: one resource, or a template of resources.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A single resource (an unmapped tool, a resource uri, a prompt).
    Literal(&'a str),
    /// A template's regex ([`crate::proxy::route::ResourceTemplate::regex`]).
    Template(&'a str),
}

/// Whether `who` could be allowed `action` on some resource of `target`, constraints aside:
/// an allow policy of the agent (and of the token's `policyIds`, when narrowed) reaches it,
/// and no deny policy covers all of it. This decides what a list shows; every call is still
/// decided on its own.
pub fn could_allow(
    set: &super::PolicySet,
    who: &super::Principal<'_>,
    action: &str,
    target: Target<'_>,
    reach: &Reach,
) -> bool {
    let meets = |glob: &str| match target {
        Target::Literal(r) => super::glob::matches_slow(glob, r),
        Target::Template(t) => reach.meets(t, glob),
    };
    let covers = |glob: &str| match target {
        Target::Literal(r) => super::glob::matches_slow(glob, r),
        Target::Template(t) => reach.covers(t, glob),
    };
    let mut allowed = false;
    for p in set
        .policies()
        .iter()
        .filter(|p| p.tenant == who.tenant && p.covers_agent(who.agent) && p.covers_action(action))
    {
        match p.effect {
            super::Effect::Deny => {
                if p.resources.iter().any(|g| covers(g)) {
                    return false;
                }
            }
            super::Effect::Allow => {
                let narrowed_out = who
                    .policy_ids
                    .is_some_and(|ids| !ids.iter().any(|i| **i == *p.id));
                if !allowed && !narrowed_out && p.resources.iter().any(|g| meets(g)) {
                    allowed = true;
                }
            }
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::route::ResourceTemplate;

    fn t(template: &str) -> String {
        ResourceTemplate::parse_free(template).unwrap().0.regex()
    }

    #[test]
    fn a_template_meets_the_globs_some_value_could_match() {
        let r = Reach::default();
        let cust = t("api://crm/customers/{id}");
        assert!(r.meets(&cust, "api://crm/customers/*"));
        assert!(
            r.meets(&cust, "api://crm/customers/42"),
            "a literal the template can produce"
        );
        assert!(r.meets(&cust, "api://crm/customers/4*"));
        assert!(r.meets(&cust, "api://crm/**"));
        assert!(r.meets(&cust, "**"));
        assert!(
            !r.meets(&cust, "api://crm/customers"),
            "the template always has a segment more"
        );
        assert!(
            !r.meets(&cust, "api://crm/customers/42/notes"),
            "a value holds no `/`"
        );
        assert!(!r.meets(&cust, "api://crm/orders/*"));
        assert!(!r.meets(&cust, "api://crm/customers/*/notes"));
        assert!(
            !r.meets(&cust, "api://crm/customers/a*b/**"),
            "values hold no `/`"
        );
        // A literal template is one resource.
        let lit = t("api://email/outbound");
        assert!(r.meets(&lit, "api://email/*"));
        assert!(!r.meets(&lit, "api://email/inbound"));
    }

    #[test]
    fn a_glob_covers_a_template_only_when_every_value_matches() {
        let r = Reach::default();
        let cust = t("api://crm/customers/{id}");
        assert!(r.covers(&cust, "api://crm/customers/*"));
        assert!(r.covers(&cust, "api://crm/**"));
        assert!(r.covers(&cust, "**"));
        assert!(!r.covers(&cust, "api://crm/customers/4*"));
        assert!(!r.covers(&cust, "api://crm/customers/42"));
        let two = t("api://crm/{kind}/{id}");
        assert!(r.covers(&two, "api://crm/*/*"));
        assert!(!r.covers(&two, "api://crm/customers/*"));
        assert!(r.meets(&two, "api://crm/customers/*"));
    }
}
