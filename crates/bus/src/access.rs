//! Who may do what on the bus: one NATS user per service, an operator, and a read-only
//! subscriber, each allowed exactly the subjects its work needs.
//!
//! This is the one place the permissions are written. [`authorization_config`] renders them as
//! a nats-server `authorization` block; the local demo, the tests and the Kubernetes manifests
//! all run that rendering (`oprelay nats authorization`), so what the tests prove is what is
//! deployed. Passwords are not in it: each user's password is read by nats-server from an
//! environment variable ([`Role::password_env`]) that a Kubernetes Secret fills.
//!
//! What the JetStream client does, in subjects (a permission list has to name them):
//! - publish into a stream: the stream's subject; the ack comes back on the client's inbox.
//! - stream and consumer info: `$JS.API.STREAM.INFO.<stream>`, `$JS.API.CONSUMER.INFO.<stream>.<consumer>`.
//! - pull from a durable consumer: `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`; ack on
//!   `$JS.ACK.<stream>.<consumer>.…`.
//! - KV get: `$JS.API.DIRECT.GET.KV_<bucket>.…` (or `$JS.API.STREAM.MSG.GET.KV_<bucket>`);
//!   KV put, create, update and delete: publish to `$KV.<bucket>.<key>`; KV keys and watch:
//!   an ordered consumer (`$JS.API.CONSUMER.CREATE.KV_<bucket>…`) delivering to the inbox,
//!   with flow control answered on `$JS.FC.KV_<bucket>.…`.
//!
//! Every user's replies arrive under its own inbox prefix (`_INBOX.<user>`, see
//! [`inbox_prefix`]), so no user can read another's replies.

use std::fmt::Write as _;

use oprelay_events::names;

/// A NATS user of an oprelay deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Publishes raw pages; owns cursors, leases and status rows.
    Fetcher,
    /// Consumes raw pages; publishes records and normalize dead letters.
    Normalizer,
    /// Consumes its sinks' records; publishes forward dead letters.
    Forwarder,
    /// Reads what it watches; publishes alarms; owns its lease and `OP_HEALTH`.
    Healthwatch,
    /// `oprelay` in an operator's hands: provisioning, lookups, the DLQ, status.
    Operator,
    /// Anyone reading the normalized records through their own consumers.
    Subscriber,
}

impl Role {
    /// Every role, services first.
    pub const ALL: [Role; 6] = [
        Role::Fetcher,
        Role::Normalizer,
        Role::Forwarder,
        Role::Healthwatch,
        Role::Operator,
        Role::Subscriber,
    ];

    /// The role's short name: `fetcher`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Fetcher => "fetcher",
            Role::Normalizer => "normalizer",
            Role::Forwarder => "forwarder",
            Role::Healthwatch => "healthwatch",
            Role::Operator => "operator",
            Role::Subscriber => "subscriber",
        }
    }

    /// The NATS user name: `oprelay-fetcher`, …
    pub fn user(self) -> String {
        format!("oprelay-{}", self.as_str())
    }

    /// The environment variable nats-server reads this user's password from.
    pub fn password_env(self) -> String {
        format!(
            "OPRELAY_NATS_PASSWORD_{}",
            self.as_str().to_ascii_uppercase()
        )
    }
}

/// The inbox prefix a client connecting as `user` uses, and may subscribe under.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX.{user}")
}

/// Subjects a user may publish to and subscribe to; `deny` wins over `allow`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may not publish to, even where `publish` allows.
    pub publish_deny: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

impl Permissions {
    fn publish(&mut self, subjects: impl IntoIterator<Item = String>) -> &mut Self {
        self.publish.extend(subjects);
        self
    }
}

fn stream_info(stream: &str) -> String {
    format!("$JS.API.STREAM.INFO.{stream}")
}

/// Read single values of a stream (KV gets, last message by subject).
fn read_messages(stream: &str) -> [String; 3] {
    [
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
    ]
}

/// Read a bucket: its info, single keys, and `keys()`/`watch()` through ordered consumers.
fn kv_read(bucket: &str) -> Vec<String> {
    let stream = format!("KV_{bucket}");
    let mut out = vec![stream_info(&stream)];
    out.extend(read_messages(&stream));
    out.extend([
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
        format!("$JS.FC.{stream}.>"),
    ]);
    out
}

/// Write keys of a bucket under `keys` (`>` for all).
fn kv_write(bucket: &str, keys: &str) -> String {
    format!("$KV.{bucket}.{keys}")
}

/// Pull from a durable consumer and acknowledge.
fn consume(stream: &str, durable: &str) -> [String; 3] {
    [
        format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
        format!("$JS.ACK.{stream}.{durable}.>"),
    ]
}

/// What `role` may do. `sinks` are the forwarder's sink names: the forwarder consumes their
/// consumers, and the subscriber must not touch them (pulling from one would take records away
/// from a SIEM).
pub fn permissions(role: Role, sinks: &[String]) -> Permissions {
    let mut p = Permissions {
        subscribe: vec![format!("{}.>", inbox_prefix(&role.user()))],
        ..Default::default()
    };
    match role {
        Role::Fetcher => fetcher(&mut p),
        Role::Normalizer => normalizer(&mut p),
        Role::Forwarder => forwarder(&mut p, sinks),
        Role::Healthwatch => healthwatch(&mut p),
        Role::Operator => operator(&mut p),
        Role::Subscriber => subscriber(&mut p, sinks),
    }
    p
}

/// Raw pages and fetch dead letters; cursors, leases and its status rows.
fn fetcher(p: &mut Permissions) {
    p.publish([
        names::SUBJECTS_RAW.to_owned(),
        names::dlq_stage_filter("fetch"),
        stream_info(names::STREAM_RAW),
        stream_info(names::STREAM_DLQ),
        kv_write(names::BUCKET_CURSORS, ">"),
        kv_write(names::BUCKET_LEASES, ">"),
        kv_write(names::BUCKET_STATUS, "fetch.>"),
    ])
    .publish(kv_read(names::BUCKET_CURSORS))
    .publish(kv_read(names::BUCKET_LEASES))
    .publish(kv_read(names::BUCKET_STATUS));
}

/// Its consumer on `OP_RAW`; records and normalize dead letters; lookups, read.
fn normalizer(p: &mut Permissions) {
    p.publish([
        names::SUBJECTS_EVENTS.to_owned(),
        names::dlq_stage_filter("normalize"),
        stream_info(names::STREAM_RAW),
        stream_info(names::STREAM_EVENTS),
        stream_info(names::STREAM_DLQ),
    ])
    .publish(consume(names::STREAM_RAW, names::CONSUMER_NORMALIZER))
    .publish(kv_read(names::BUCKET_LOOKUPS));
}

/// Its sinks' consumers on `OP_EVENTS`; forward dead letters.
fn forwarder(p: &mut Permissions, sinks: &[String]) {
    p.publish([
        names::dlq_stage_filter("forward"),
        stream_info(names::STREAM_EVENTS),
        stream_info(names::STREAM_DLQ),
    ]);
    for sink in sinks {
        p.publish(consume(names::STREAM_EVENTS, &names::sink_consumer(sink)));
    }
}

/// Reads what it watches; writes alarms, `OP_HEALTH` and its own lease.
fn healthwatch(p: &mut Permissions) {
    p.publish([
        names::SUBJECTS_ALARMS.to_owned(),
        stream_info(names::STREAM_EVENTS),
        stream_info(names::STREAM_DLQ),
        stream_info(names::STREAM_ALARMS),
        // Sink backlogs: consumer info is read-only.
        format!("$JS.API.CONSUMER.INFO.{}.*", names::STREAM_EVENTS),
        kv_write(names::BUCKET_HEALTH, ">"),
        // Its own lease only; the fetchers' leases are theirs.
        kv_write(names::BUCKET_LEASES, names::LEASE_HEALTHWATCH),
    ])
    .publish(read_messages(names::STREAM_EVENTS))
    .publish(kv_read(names::BUCKET_HEALTH))
    .publish(kv_read(names::BUCKET_STATUS))
    .publish(kv_read(names::BUCKET_LEASES));
}

/// Anything on oprelay's subjects and the JetStream API.
fn operator(p: &mut Permissions) {
    p.publish(["op.>", "$KV.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>"].map(str::to_owned));
}

/// Its own consumers on `OP_EVENTS`, never oprelay's.
fn subscriber(p: &mut Permissions, sinks: &[String]) {
    let events = names::STREAM_EVENTS;
    p.publish([
        stream_info(events),
        format!("$JS.API.CONSUMER.CREATE.{events}.>"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{events}.*"),
        format!("$JS.API.CONSUMER.INFO.{events}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{events}.*"),
        format!("$JS.ACK.{events}.>"),
        format!("$JS.FC.{events}.>"),
    ]);
    // oprelay's own consumers on OP_EVENTS: the subscriber may neither change them nor
    // take (or acknowledge) their messages.
    let owned = sinks.iter().map(|s| names::sink_consumer(s));
    for durable in owned {
        p.publish_deny.extend([
            format!("$JS.API.CONSUMER.CREATE.{events}.{durable}"),
            format!("$JS.API.CONSUMER.CREATE.{events}.{durable}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{events}.{durable}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{events}.{durable}"),
            format!("$JS.ACK.{events}.{durable}.>"),
        ]);
    }
}

fn quoted_list(out: &mut String, items: &[String]) {
    let list: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    let _ = write!(out, "[{}]", list.join(", "));
}

/// The nats-server `authorization { users = [...] }` block for a deployment whose forwarder
/// has `sinks`. Anonymous connections are refused (no `no_auth_user`).
pub fn authorization_config(sinks: &[String]) -> String {
    let mut out = String::from(
        "# oprelay's NATS users. Generated by `oprelay nats authorization`; do not edit.\n\
         # Each password is read from the environment variable named beside it.\n\
         authorization {\n  users = [\n",
    );
    for role in Role::ALL {
        let p = permissions(role, sinks);
        let _ = write!(
            out,
            "    {{\n      user: {:?}\n      password: ${}\n      permissions: {{\n        publish: {{\n          allow: ",
            role.user(),
            role.password_env()
        );
        quoted_list(&mut out, &p.publish);
        if !p.publish_deny.is_empty() {
            out.push_str("\n          deny: ");
            quoted_list(&mut out, &p.publish_deny);
        }
        out.push_str("\n        }\n        subscribe: { allow: ");
        quoted_list(&mut out, &p.subscribe);
        out.push_str(" }\n      }\n    }\n");
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(patterns: &[String], subject: &str) -> bool {
        patterns.iter().any(|p| matches(p, subject))
    }

    /// NATS subject matching: `*` one token, `>` one or more trailing tokens.
    fn matches(pattern: &str, subject: &str) -> bool {
        let mut p = pattern.split('.');
        let mut s = subject.split('.');
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    fn may_publish(role: Role, subject: &str) -> bool {
        let p = permissions(role, &["siem".to_owned()]);
        allows(&p.publish, subject) && !allows(&p.publish_deny, subject)
    }

    #[test]
    fn each_service_writes_only_its_own_subjects() {
        assert!(may_publish(Role::Fetcher, "op.raw.acme.item_usages"));
        assert!(!may_publish(Role::Normalizer, "op.raw.acme.item_usages"));
        assert!(may_publish(Role::Normalizer, "op.events.acme.item_usages"));
        assert!(!may_publish(
            Role::Forwarder,
            "$KV.OP_CURSORS.acme.item_usages"
        ));
        assert!(may_publish(
            Role::Forwarder,
            "op.dlq.forward.acme.item_usages"
        ));
        assert!(!may_publish(
            Role::Forwarder,
            "op.dlq.normalize.acme.item_usages"
        ));
        assert!(may_publish(Role::Healthwatch, "$KV.OP_LEASES._healthwatch"));
        assert!(!may_publish(
            Role::Healthwatch,
            "$KV.OP_LEASES.acme.item_usages"
        ));
        for role in Role::ALL {
            if role != Role::Operator {
                assert!(
                    !may_publish(role, "$JS.API.STREAM.DELETE.OP_RAW"),
                    "{role:?}"
                );
                assert!(
                    !may_publish(role, "$JS.API.STREAM.UPDATE.OP_RAW"),
                    "{role:?}"
                );
            }
        }
    }

    #[test]
    fn the_subscriber_reads_through_its_own_consumers_only() {
        let s = Role::Subscriber;
        assert!(may_publish(
            s,
            "$JS.API.CONSUMER.CREATE.OP_EVENTS.lake.op.events.>"
        ));
        assert!(may_publish(s, "$JS.API.CONSUMER.MSG.NEXT.OP_EVENTS.lake"));
        assert!(!may_publish(
            s,
            "$JS.API.CONSUMER.MSG.NEXT.OP_EVENTS.sink-siem"
        ));
        assert!(!may_publish(
            s,
            "$JS.API.CONSUMER.CREATE.OP_EVENTS.sink-siem.op.events.>"
        ));
        assert!(!may_publish(s, "$JS.API.CONSUMER.DELETE.OP_EVENTS.lake"));
        assert!(!may_publish(s, "op.events.acme.item_usages"));
        assert!(!may_publish(s, "$KV.OP_LOOKUPS.x"));
    }

    #[test]
    fn every_user_has_its_own_inbox() {
        for role in Role::ALL {
            let p = permissions(role, &[]);
            assert_eq!(p.subscribe, [format!("_INBOX.{}.>", role.user())]);
        }
    }

    #[test]
    fn the_rendered_block_names_every_user_and_no_password() {
        let text = authorization_config(&["siem".to_owned()]);
        for role in Role::ALL {
            assert!(text.contains(&format!("user: \"{}\"", role.user())));
            assert!(text.contains(&format!("password: ${}", role.password_env())));
        }
        assert!(text.contains("sink-siem"));
    }
}
