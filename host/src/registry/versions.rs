//! A function's history as one document: every retained version, the
//! aliases naming them, how `live` traffic is split, and the canary moving
//! it. One document per function is written with one store write, so a
//! crash leaves the whole old document or the whole new one: never an
//! alias moved without its version, or weights over a version not kept.
//!
//! Everything here is pure: the registry applies these changes to a copy,
//! persists it, then installs it.

use super::record::Version;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The alias a plain invocation uses; a deploy moves it unless told not to.
pub const LIVE: &str = "live";
/// Most versions one split may name (SageMaker allows 10 variants; a few
/// are what a rollout needs).
pub const MAX_SPLIT: usize = 4;
/// Versions kept by default besides those an alias or the split names.
pub const DEFAULT_KEEP: usize = 10;

/// One version's share of `live` traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    /// The version.
    pub version: u64,
    /// Percent of requests, 1..=100.
    pub percent: u8,
}

/// Where a canary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CanaryState {
    /// Taking its share of traffic until `ends_at`.
    Running,
    /// Healthy over the window: now `live`.
    Promoted,
    /// Clearly worse than the version it was tried against: traffic went back.
    RolledBack,
    /// Ended by an operator (a deploy, rollback, alias or traffic change).
    Cancelled,
}

/// A new version tried on part of `live` traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Canary {
    /// The version tried.
    pub version: u64,
    /// The version it is compared with (`live` when it started).
    pub baseline: u64,
    /// Its share of traffic, percent.
    pub percent: u8,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix seconds at which a healthy canary is promoted.
    pub ends_at: u64,
    /// Where it is.
    pub state: CanaryState,
    /// Why it ended (what the rule saw), once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a change to the document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The version is not (or no longer) kept.
    #[error("version {0} does not exist (or was collected); `nimbus versions` lists those kept")]
    NoVersion(u64),
    /// The alias does not exist.
    #[error("alias `{0}` does not exist")]
    NoAlias(String),
    /// The change makes no sense as asked.
    #[error("{0}")]
    Invalid(String),
}

/// Every retained version of a function and what points at them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// The function's name.
    pub name: String,
    /// Unix seconds of the first deploy.
    pub created_at: u64,
    /// The last version number given out; numbers are never reused.
    pub latest: u64,
    /// Retained versions by number.
    pub versions: BTreeMap<u64, Version>,
    /// Alias -> version; always has [`LIVE`].
    pub aliases: BTreeMap<String, u64>,
    /// How `live` requests are split; empty: all go to `aliases["live"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<Weight>,
    /// The current or last canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

impl FunctionRecord {
    /// A new function whose first version is `v` (number 1), live.
    pub fn new(name: &str, mut v: Version) -> Self {
        v.version = 1;
        let created_at = v.deployed_at;
        FunctionRecord {
            name: name.to_owned(),
            created_at,
            latest: 1,
            versions: BTreeMap::from([(1, v)]),
            aliases: BTreeMap::from([(LIVE.to_owned(), 1)]),
            traffic: Vec::new(),
            canary: None,
        }
    }

    /// Reads a stored document. A record written before versions existed
    /// (one version, flat) becomes a document with that version live.
    pub fn from_stored(name: &str, bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
        if value.get("versions").is_some() {
            return serde_json::from_value(value);
        }
        // Flat: `created_at` was the function's, `updated_at` the version's.
        let created_at = value.get("created_at").and_then(|v| v.as_u64()).unwrap_or(0);
        value["deployed_at"] = value.get("updated_at").cloned().unwrap_or_default();
        let v: Version = serde_json::from_value(value)?;
        let number = v.version;
        let mut record = FunctionRecord::new(name, v);
        record.created_at = created_at;
        if let Some(mut v) = record.versions.remove(&1) {
            v.version = number;
            record.versions.insert(number, v);
        }
        record.latest = number;
        record.aliases.insert(LIVE.to_owned(), number);
        Ok(record)
    }

    /// The version `live` points at (the largest share of a split).
    pub fn live(&self) -> &Version {
        &self.versions[&self.aliases[LIVE]]
    }

    /// The version `alias` points at.
    pub fn alias(&self, alias: &str) -> Result<u64, Refused> {
        self.aliases.get(alias).copied().ok_or_else(|| Refused::NoAlias(alias.to_owned()))
    }

    /// A retained version.
    pub fn version(&self, version: u64) -> Result<&Version, Refused> {
        self.versions.get(&version).ok_or(Refused::NoVersion(version))
    }

    /// Where `live` requests go: the split, or all to the live version.
    pub fn routes(&self) -> Vec<Weight> {
        if self.traffic.is_empty() {
            vec![Weight { version: self.aliases[LIVE], percent: 100 }]
        } else {
            self.traffic.clone()
        }
    }

    /// The running canary, if one is.
    pub fn running_canary(&self) -> Option<&Canary> {
        self.canary.as_ref().filter(|c| c.state == CanaryState::Running)
    }

    /// Adds `v` as the next version; with `promote`, `live` moves to it (a
    /// split and a running canary end). Returns its number.
    pub fn add(&mut self, mut v: Version, promote: bool) -> u64 {
        self.latest += 1;
        v.version = self.latest;
        self.versions.insert(self.latest, v);
        if promote {
            self.point_live(self.latest, "a deploy promoted a new version");
        }
        self.latest
    }

    /// Moves `live` to `version`: the split clears and a running canary
    /// is cancelled with `why`.
    fn point_live(&mut self, version: u64, why: &str) {
        self.aliases.insert(LIVE.to_owned(), version);
        self.traffic.clear();
        self.end_canary(CanaryState::Cancelled, why.to_owned());
    }

    fn end_canary(&mut self, state: CanaryState, reason: String) {
        if let Some(c) = self.canary.as_mut().filter(|c| c.state == CanaryState::Running) {
            c.state = state;
            c.reason = Some(reason);
        }
    }

    /// Points `alias` at `version` (moving `live` clears its split).
    pub fn set_alias(&mut self, alias: &str, version: u64) -> Result<(), Refused> {
        validate_alias(alias)?;
        self.version(version)?;
        if alias == LIVE {
            self.point_live(version, "`live` was moved by hand");
        } else {
            self.aliases.insert(alias.to_owned(), version);
        }
        Ok(())
    }

    /// Removes `alias`; `live` cannot be removed.
    pub fn delete_alias(&mut self, alias: &str) -> Result<(), Refused> {
        if alias == LIVE {
            return Err(Refused::Invalid("`live` cannot be deleted; point it elsewhere with `nimbus alias`".into()));
        }
        self.aliases.remove(alias).map(drop).ok_or_else(|| Refused::NoAlias(alias.to_owned()))
    }

    /// Splits `live` over `weights` (distinct retained versions, 1..=100
    /// percent each, 100 in all, at most [`MAX_SPLIT`]). `live` names the
    /// largest share (the first of equals). One version at 100 is a plain
    /// move of `live`.
    pub fn set_traffic(&mut self, weights: &[Weight]) -> Result<(), Refused> {
        check_split(weights)?;
        for w in weights {
            self.version(w.version)?;
        }
        let primary = weights.iter().fold(weights[0], |best, w| if w.percent > best.percent { *w } else { best });
        self.point_live(primary.version, "traffic was split by hand");
        if weights.len() > 1 {
            self.traffic = weights.to_vec();
        }
        Ok(())
    }

    /// Moves `live` back: to `to`, or else to the newest retained version
    /// older than the live one.
    pub fn rollback(&mut self, to: Option<u64>) -> Result<u64, Refused> {
        let live = self.aliases[LIVE];
        let target =
            match to {
                Some(v) => {
                    self.version(v)?;
                    v
                }
                None => *self.versions.range(..live).next_back().map(|(v, _)| v).ok_or_else(|| {
                    Refused::Invalid(format!("version {live} is the oldest kept; name one with --to"))
                })?,
            };
        self.point_live(target, &format!("rolled back from version {live} to {target}"));
        Ok(target)
    }

    /// Starts a canary of `version` (just added, not promoted) on `percent`
    /// of `live` traffic until `now + seconds`, against the live version.
    pub fn start_canary(&mut self, version: u64, percent: u8, now: u64, seconds: u64) -> Result<(), Refused> {
        if !(1..=99).contains(&percent) {
            return Err(Refused::Invalid(format!("a canary takes 1..99 percent of traffic; got {percent}")));
        }
        let baseline = self.aliases[LIVE];
        if baseline == version {
            return Err(Refused::Invalid("a canary needs a live version to compare with".into()));
        }
        self.traffic = vec![Weight { version: baseline, percent: 100 - percent }, Weight { version, percent }];
        self.canary = Some(Canary {
            version,
            baseline,
            percent,
            started_at: now,
            ends_at: now + seconds,
            state: CanaryState::Running,
            reason: None,
        });
        Ok(())
    }

    /// Ends the running canary: promoted (`live` moves to it) or rolled
    /// back (traffic returns to the baseline), recording `reason`.
    pub fn decide_canary(&mut self, promote: bool, reason: String) {
        let Some(c) = self.running_canary().cloned() else { return };
        self.aliases.insert(LIVE.to_owned(), if promote { c.version } else { c.baseline });
        self.traffic.clear();
        self.end_canary(if promote { CanaryState::Promoted } else { CanaryState::RolledBack }, reason);
    }

    /// Versions that must stay: every alias's, every split's, a running
    /// canary's pair, and the `keep` newest.
    fn pinned(&self, keep: usize) -> BTreeSet<u64> {
        let mut pinned: BTreeSet<u64> = self.aliases.values().copied().collect();
        pinned.extend(self.traffic.iter().map(|w| w.version));
        pinned.extend(self.running_canary().iter().flat_map(|c| [c.version, c.baseline]));
        pinned.extend(self.versions.keys().rev().take(keep));
        pinned
    }

    /// Drops the versions past the `keep` newest that nothing points at;
    /// returns their numbers.
    pub fn retain(&mut self, keep: usize) -> Vec<u64> {
        let pinned = self.pinned(keep);
        let dropped: Vec<u64> = self.versions.keys().filter(|v| !pinned.contains(v)).copied().collect();
        for v in &dropped {
            self.versions.remove(v);
        }
        dropped
    }

    /// Aliases pointing at `version`, sorted.
    pub fn aliases_of(&self, version: u64) -> Vec<&str> {
        self.aliases.iter().filter(|(_, v)| **v == version).map(|(a, _)| a.as_str()).collect()
    }
}

/// Alias names: like function names, and not a number (which would read
/// as a version).
pub fn validate_alias(alias: &str) -> Result<(), Refused> {
    super::validate_name(alias).map_err(|e| Refused::Invalid(e.replacen("function name", "alias", 1)))?;
    if alias.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refused::Invalid(format!("alias `{alias}` is a number; aliases must contain a letter")));
    }
    Ok(())
}

fn check_split(weights: &[Weight]) -> Result<(), Refused> {
    if weights.is_empty() || weights.len() > MAX_SPLIT {
        return Err(Refused::Invalid(format!("a split names 1 to {MAX_SPLIT} versions; got {}", weights.len())));
    }
    let mut seen = BTreeSet::new();
    for w in weights {
        if !seen.insert(w.version) {
            return Err(Refused::Invalid(format!("version {} appears twice in the split", w.version)));
        }
        if !(1..=100).contains(&w.percent) {
            return Err(Refused::Invalid(format!("version {}: weights are 1..100 percent", w.version)));
        }
    }
    let total: u32 = weights.iter().map(|w| u32::from(w.percent)).sum();
    if total != 100 {
        return Err(Refused::Invalid(format!("weights add up to {total}; they must add up to 100")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::FunctionConfig;
    use crate::store::Digest;

    fn version(tag: &str) -> Version {
        Version {
            version: 0,
            wasm: Digest::of(tag.as_bytes()),
            wasm_size: 1,
            artifacts: Vec::new(),
            artifacts_digest: Digest::of(b""),
            config: FunctionConfig::default(),
            deployed_at: 7,
            description: None,
            builtin: false,
            graphs: Default::default(),
            snapshot: None,
        }
    }

    /// A function with versions 1..=n, live on n.
    fn function(n: u64) -> FunctionRecord {
        let mut f = FunctionRecord::new("f", version("1"));
        for i in 2..=n {
            f.add(version(&i.to_string()), true);
        }
        f
    }

    fn w(version: u64, percent: u8) -> Weight {
        Weight { version, percent }
    }

    #[test]
    fn deploys_number_versions_and_move_live_unless_told_not_to() {
        let mut f = function(2);
        assert_eq!((f.aliases[LIVE], f.latest), (2, 2));
        assert_eq!(f.add(version("3"), false), 3);
        assert_eq!(f.aliases[LIVE], 2);
        assert_eq!(f.routes(), vec![w(2, 100)]);
    }

    #[test]
    fn rollback_goes_to_the_previous_kept_version_or_the_one_named() {
        let mut f = function(4);
        assert_eq!(f.rollback(None), Ok(3));
        assert_eq!(f.rollback(None), Ok(2));
        assert_eq!(f.rollback(Some(4)), Ok(4));
        assert_eq!(f.rollback(Some(9)), Err(Refused::NoVersion(9)));
        f.versions.remove(&3);
        assert_eq!(f.rollback(None), Ok(2), "skips a collected version");
        f.rollback(Some(1)).unwrap();
        assert!(matches!(f.rollback(None), Err(Refused::Invalid(_))));
    }

    #[test]
    fn splits_are_checked_and_live_names_the_largest_share() {
        let mut f = function(3);
        f.set_traffic(&[w(2, 10), w(3, 90)]).unwrap();
        assert_eq!((f.aliases[LIVE], f.routes()), (3, vec![w(2, 10), w(3, 90)]));
        for bad in [
            vec![],
            vec![w(1, 50), w(1, 50)],
            vec![w(1, 60), w(2, 60)],
            vec![w(1, 0), w(2, 100)],
            vec![w(1, 20), w(2, 20), w(3, 20), w(1, 20), w(2, 20)],
        ] {
            assert!(matches!(f.set_traffic(&bad), Err(Refused::Invalid(_))), "{bad:?}");
        }
        assert_eq!(f.set_traffic(&[w(7, 100)]), Err(Refused::NoVersion(7)));
        assert_eq!(f.routes(), vec![w(2, 10), w(3, 90)], "a refused split changes nothing");
        f.set_traffic(&[w(1, 100)]).unwrap();
        assert_eq!((f.aliases[LIVE], f.routes()), (1, vec![w(1, 100)]));
    }

    #[test]
    fn a_canary_splits_until_decided_and_an_operator_change_cancels_it() {
        let mut f = function(2);
        f.add(version("3"), false);
        f.start_canary(3, 10, 100, 300).unwrap();
        assert_eq!((f.aliases[LIVE], f.routes()), (2, vec![w(2, 90), w(3, 10)]));
        f.decide_canary(false, "worse".into());
        let c = f.canary.clone().unwrap();
        assert_eq!(
            (c.state, c.reason.as_deref(), f.routes()),
            (CanaryState::RolledBack, Some("worse"), vec![w(2, 100)])
        );

        f.start_canary(3, 10, 100, 300).unwrap();
        f.decide_canary(true, "healthy".into());
        assert_eq!((f.aliases[LIVE], f.canary.as_ref().unwrap().state), (3, CanaryState::Promoted));

        f.add(version("4"), false);
        f.start_canary(4, 20, 100, 300).unwrap();
        f.rollback(Some(2)).unwrap();
        assert_eq!(f.canary.as_ref().unwrap().state, CanaryState::Cancelled);
        assert_eq!(f.routes(), vec![w(2, 100)]);
        assert!(f.start_canary(2, 10, 0, 1).is_err(), "a canary of the live version");
    }

    #[test]
    fn retention_keeps_the_newest_and_everything_pointed_at() {
        let mut f = function(6);
        f.set_alias("stable", 1).unwrap();
        f.add(version("7"), false);
        f.start_canary(7, 10, 0, 60).unwrap();
        f.aliases.insert(LIVE.into(), 6);
        assert_eq!(f.retain(2), vec![2, 3, 4, 5]);
        assert_eq!(f.versions.keys().copied().collect::<Vec<_>>(), vec![1, 6, 7]);
        assert!(f.retain(2).is_empty());
    }

    #[test]
    fn aliases_are_names_and_live_stays() {
        let mut f = function(2);
        assert!(matches!(f.set_alias("42", 1), Err(Refused::Invalid(_))));
        assert!(matches!(f.set_alias("Bad_Name", 1), Err(Refused::Invalid(_))));
        assert_eq!(f.set_alias("beta", 5), Err(Refused::NoVersion(5)));
        f.set_alias("beta", 1).unwrap();
        assert_eq!(f.aliases_of(1), vec!["beta"]);
        assert!(matches!(f.delete_alias(LIVE), Err(Refused::Invalid(_))));
        assert_eq!(f.delete_alias("gamma"), Err(Refused::NoAlias("gamma".into())));
        f.delete_alias("beta").unwrap();
        assert!(f.aliases_of(1).is_empty());
    }

    #[test]
    fn a_record_from_before_versions_reads_as_its_one_live_version() {
        let old = serde_json::json!({
            "name": "f", "version": 3, "wasm": Digest::of(b"w"), "wasm_size": 1, "artifacts": [],
            "artifacts_digest": Digest::of(b""), "config": {}, "created_at": 5, "updated_at": 9
        });
        let f = FunctionRecord::from_stored("f", &serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!((f.latest, f.aliases[LIVE], f.live().version, f.created_at), (3, 3, 3, 5));
        let again = FunctionRecord::from_stored("f", &serde_json::to_vec(&f).unwrap()).unwrap();
        assert_eq!(again, f);
    }
}
