//! The simulated account's people, vaults, items and groups, and their `op … list` output.

use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};

use super::{random_uuid, rng_for};

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Alan",
    "Radia",
    "Tim",
    "Hedy",
    "Whitfield",
    "Shafi",
    "Bjarne",
    "Zoë",
    "José",
    "Søren",
    "Anaïs",
    "Jack",
    "Mei",
    "Aarav",
    "Fatima",
    "Olusegun",
    "Yuki",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Turing",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "Diffie",
    "Goldwasser",
    "Stroustrup",
    "Núñez",
    "Kierkegaard",
    "O'Neill",
    "Chen",
    "Sharma",
    "Haddad",
    "Obasanjo",
    "Tanaka",
];
const DOMAINS: &[&str] = &["example.com", "acme.example", "corp.example.org"];
const ITEM_WORDS: &[&str] = &[
    "AWS root",
    "GitHub",
    "Prod database",
    "Stripe",
    "Okta admin",
    "VPN",
    "Wi-Fi",
    "Slack",
    "Datadog",
    "Break-glass",
    "Payroll",
    "Signing key",
    "Jira",
    "Google Workspace",
    "SSH bastion",
];
const VAULT_WORDS: &[&str] = &[
    "Engineering",
    "Finance",
    "Private",
    "Shared",
    "Infrastructure",
    "Security",
    "Marketing",
    "Executives",
    "Support",
    "Legal",
];
const GROUP_WORDS: &[&str] = &[
    "Owners",
    "Administrators",
    "Team Members",
    "Recovery",
    "Security",
    "Engineering",
];

/// (country, region, city, latitude, longitude)
#[derive(Clone, Debug, Serialize)]
pub struct DirUser {
    pub uuid: String,
    pub name: String,
    pub email: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DirVault {
    pub uuid: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DirItem {
    pub uuid: String,
    pub title: String,
    pub vault: usize,
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DirGroup {
    pub uuid: String,
    pub name: String,
}

/// The simulated account's people and objects. Events refer to them by UUID, and tests and the
/// demo export them as `op … list` output to build lookup tables.
#[derive(Clone, Debug, Serialize)]
pub struct Directory {
    pub account_uuid: String,
    pub users: Vec<DirUser>,
    pub vaults: Vec<DirVault>,
    pub items: Vec<DirItem>,
    pub groups: Vec<DirGroup>,
}

impl Directory {
    pub fn new(seed: u64) -> Self {
        let mut rng = rng_for(seed, 0xD1, 0);
        let account_uuid = random_uuid(&mut rng);
        let users = (0..120)
            .map(|i| {
                let first = FIRST[i % FIRST.len()];
                let last = LAST[(i / FIRST.len() + i) % LAST.len()];
                let domain = DOMAINS[i % DOMAINS.len()];
                let local: String = format!("{first}.{last}{}", i / (FIRST.len() * 3))
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .collect();
                DirUser {
                    uuid: random_uuid(&mut rng),
                    name: format!("{first} {last}"),
                    email: format!("{local}@{domain}"),
                }
            })
            .collect();
        let vaults: Vec<DirVault> = (0..24)
            .map(|i| DirVault {
                uuid: random_uuid(&mut rng).to_lowercase(),
                name: format!(
                    "{} {}",
                    VAULT_WORDS[i % VAULT_WORDS.len()],
                    i / VAULT_WORDS.len() + 1
                ),
            })
            .collect();
        let items = (0..600)
            .map(|i| DirItem {
                uuid: random_uuid(&mut rng).to_lowercase(),
                title: format!(
                    "{} #{}",
                    ITEM_WORDS[i % ITEM_WORDS.len()],
                    i / ITEM_WORDS.len() + 1
                ),
                vault: rng.random_range(0..vaults.len()),
                updated_at: format!("2026-0{}-1{}T08:00:00Z", 1 + i % 9, i % 10),
            })
            .collect();
        let groups = GROUP_WORDS
            .iter()
            .map(|g| DirGroup {
                uuid: random_uuid(&mut rng).to_lowercase(),
                name: (*g).to_owned(),
            })
            .collect();
        Directory {
            account_uuid,
            users,
            vaults,
            items,
            groups,
        }
    }

    /// `op item list --format json`.
    pub fn op_item_list(&self) -> Value {
        Value::Array(
            self.items
                .iter()
                .map(|it| {
                    let v = &self.vaults[it.vault];
                    json!({
                        "id": it.uuid, "title": it.title, "version": 3,
                        "vault": {"id": v.uuid, "name": v.name},
                        "category": "LOGIN", "last_edited_by": self.users[0].uuid,
                        "created_at": "2025-11-01T08:00:00Z", "updated_at": it.updated_at,
                    })
                })
                .collect(),
        )
    }

    /// `op vault list --format json`.
    pub fn op_vault_list(&self) -> Value {
        Value::Array(
            self.vaults
                .iter()
                .map(|v| json!({"id": v.uuid, "name": v.name, "content_version": 42, "created_at": "2025-11-01T08:00:00Z", "updated_at": "2026-01-01T08:00:00Z", "items": 25}))
                .collect(),
        )
    }

    /// `op user list --format json`.
    pub fn op_user_list(&self) -> Value {
        Value::Array(
            self.users
                .iter()
                .map(|u| json!({"id": u.uuid, "name": u.name, "email": u.email, "type": "MEMBER", "state": "ACTIVE"}))
                .collect(),
        )
    }

    /// `op group list --format json`.
    pub fn op_group_list(&self) -> Value {
        Value::Array(
            self.groups
                .iter()
                .map(|g| json!({"id": g.uuid, "name": g.name, "description": "", "state": "ACTIVE", "created_at": "2025-11-01T08:00:00Z"}))
                .collect(),
        )
    }
}
