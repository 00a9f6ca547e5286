//! Enumerations whose set of values 1Password keeps extending.
//!
//! New sign-in types, item actions and audit actions appeared in every spec revision, and the
//! spec and docs disagree on spellings (`u2f_timout`). A closed Rust enum would turn tomorrow's
//! value into a parse error and a lost event, so each enum here keeps unknown values as
//! [`Other`](SignInCategory::Other) strings and serializes them back unchanged.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* #[doc = concat!("`", $text, "` on the wire.")] $variant,)*
            /// A value this version of oprelay does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// Every documented value, in documentation order.
            pub const KNOWN: &'static [&'static str] = &[$($text,)*];

            /// The value as 1Password spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(s) => s,
                }
            }

            /// Whether it is one of [`Self::KNOWN`], not an [`Other`](Self::Other).
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Ok(Self::from(s.as_ref()))
            }
        }
    };
}

open_enum! {
    /// `SignInAttempt.category`.
    SignInCategory {
        Success => "success",
        CredentialsFailed => "credentials_failed",
        MfaFailed => "mfa_failed",
        SsoFailed => "sso_failed",
        ModernVersionFailed => "modern_version_failed",
        FirewallFailed => "firewall_failed",
        FirewallReportedSuccess => "firewall_reported_success",
    }
}

open_enum! {
    /// `SignInAttempt.type`. Both spellings of the u2f timeout are known values.
    SignInType {
        CredentialsOk => "credentials_ok",
        MfaOk => "mfa_ok",
        PasswordSecretBad => "password_secret_bad",
        MfaMissing => "mfa_missing",
        TotpDisabled => "totp_disabled",
        TotpBad => "totp_bad",
        TotpTimeout => "totp_timeout",
        U2fDisabled => "u2f_disabled",
        U2fBad => "u2f_bad",
        U2fTimeout => "u2f_timeout",
        U2fTimoutSpec => "u2f_timout",
        DuoDisabled => "duo_disabled",
        DuoBad => "duo_bad",
        DuoTimeout => "duo_timeout",
        DuoNativeBad => "duo_native_bad",
        ServiceAccountSsoDenied => "service_account_sso_denied",
        NonSsoUser => "non_sso_user",
        SsoUserMismatch => "sso_user_mismatch",
        Federated => "federated",
        PlatformSecretDisabled => "platform_secret_disabled",
        PlatformSecretBad => "platform_secret_bad",
        PlatformSecretProxy => "platform_secret_proxy",
        CodeDisabled => "code_disabled",
        CodeBad => "code_bad",
        CodeTimeout => "code_timeout",
        IpBlocked => "ip_blocked",
        ContinentBlocked => "continent_blocked",
        CountryBlocked => "country_blocked",
        AnonymousBlocked => "anonymous_blocked",
        AllBlocked => "all_blocked",
        ModernVersionMissing => "modern_version_missing",
        ModernVersionOld => "modern_version_old",
    }
}

open_enum! {
    /// `ItemUsage.action`.
    ItemUsageAction {
        EnterItemEditMode => "enter-item-edit-mode",
        Export => "export",
        Fill => "fill",
        /// Sent by clients older than 8.4.0, which do not report the action.
        LegacyClient => "other",
        Reveal => "reveal",
        SecureCopy => "secure-copy",
        SelectSsoProvider => "select-sso-provider",
        ServerCreate => "server-create",
        ServerFetch => "server-fetch",
        ServerUpdate => "server-update",
        Share => "share",
    }
}

open_enum! {
    /// `AuditEvent.action`: the union of spec 1.2 and the 1.4.1 reference.
    AuditAction {
        Activate => "activate", Addgsso => "addgsso", Begin => "begin", Beginr => "beginr",
        Cancel => "cancel", Cancelr => "cancelr", Changeks => "changeks", Changela => "changela",
        Changemp => "changemp", Changenm => "changenm", Changesk => "changesk",
        Chngasso => "chngasso", Chngdsso => "chngdsso", Chngpsso => "chngpsso",
        Complete => "complete", Completr => "completr", Convert => "convert", Create => "create",
        Dealldev => "dealldev", Delete => "delete", Delgsso => "delgsso", Delshare => "delshare",
        Deolddev => "deolddev", Detchild => "detchild", Disblduo => "disblduo",
        Disblmfa => "disblmfa", Disblsso => "disblsso", Dlgsess => "dlgsess",
        Dvrfydmn => "dvrfydmn", Enblduo => "enblduo", Enblmfa => "enblmfa", Enblsso => "enblsso",
        Expire => "expire", Export => "export", Grant => "grant", Hide => "hide", Join => "join",
        Launchi => "launchi", Leave => "leave", Musercom => "musercom", Muserdec => "muserdec",
        Patch => "patch", Propose => "propose", Provsn => "provsn", Prsndall => "prsndall",
        Purge => "purge", Rdmchild => "rdmchild", Reactive => "reactive", Reauth => "reauth",
        Replace => "replace", Resendts => "resendts", Revoke => "revoke", Role => "role",
        Sdvcsso => "sdvcsso", Sendpkg => "sendpkg", Sendts => "sendts", Share => "share",
        Ssotknv => "ssotknv", Suspend => "suspend", Tdvcsso => "tdvcsso", Trename => "trename",
        Trevoke => "trevoke", Trvlaway => "trvlaway", Trvlback => "trvlback", Tverify => "tverify",
        Uisas => "uisas", Unhide => "unhide", Unknown => "unknown", Unlink => "unlink",
        Updatduo => "updatduo", Update => "update", Updatea => "updatea", Updatfw => "updatfw",
        Updatmfa => "updatmfa", Upguest => "upguest", Uvrfydmn => "uvrfydmn", Verify => "verify",
        View => "view", Vrfydmn => "vrfydmn",
    }
}

open_enum! {
    /// `AuditEvent.object_type`.
    AuditObjectType {
        Account => "account", Card => "card", Cred => "cred", Device => "device",
        Dlgdsess => "dlgdsess", Ec => "ec", Famchild => "famchild", File => "file", Gm => "gm",
        Group => "group", Gva => "gva", Invite => "invite", Item => "item", Itemhist => "itemhist",
        Items => "items", Miguser => "miguser", Mngdacc => "mngdacc", Pm => "pm",
        Report => "report", Sa => "sa", Satoken => "satoken", Slackapp => "slackapp", Sso => "sso",
        Ssotkn => "ssotkn", Sub => "sub", Template => "template", User => "user", Uva => "uva",
        Vault => "vault", Vaultkey => "vaultkey",
    }
}

open_enum! {
    /// `user_type` on v2 users and `actor_type` on v2 audit events (MSP accounts).
    UserType {
        User => "user",
        ExternalUser => "external_user",
    }
}
