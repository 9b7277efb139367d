//! Rules of request fields (see `crate::api`'s section of the same name): the limits the
//! daemon checks, and the schema-only types that state them in `GET /openapi.json`.

use crate::api::{no_control_pattern, not_blank_pattern, schema_rule, CONTROL_CLASS, SPACE_CLASS};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};

/// Longest task id, in characters.
pub const TASK_ID_CHARS_MAX: usize = 256;
/// Longest model name, policy version, action language or group, in characters.
pub const NAME_CHARS_MAX: usize = 128;
/// Most items of one list field of a state update.
pub const STATE_ITEMS_MAX: usize = 64;
/// Longest item of a state update (and `next_focus`), in bytes.
pub const STATE_ITEM_BYTES_MAX: usize = 4096;
/// Longest ast-grep pattern, rewrite or YAML rule of an action, in bytes.
pub const ACTION_TEXT_BYTES_MAX: usize = 64 * 1024;
/// Most named components of a reward.
pub const REWARD_COMPONENTS_MAX: usize = 32;
/// Largest magnitude of a reward value or component. A value is checked finite, but group
/// means, trajectory stats and `agentd_reward_value_sum` add many of them: two values of 1e308
/// summed to infinity and every figure built on them came back `null`. Within ±1e9, a sum of
/// any number of rewards a log can hold stays finite.
pub const REWARD_ABS_MAX: f64 = 1e9;
/// Longest reward component name, in characters.
pub const COMPONENT_NAME_CHARS_MAX: usize = 64;
/// Largest `first_index` of an ingest batch: positions stay far from `u64::MAX`, so a batch
/// can never end past the largest position (and stay exact as JSON numbers of 64-bit signed
/// integers).
pub const FIRST_INDEX_MAX: u64 = i64::MAX as u64;

schema_rule!(
    /// A task id: 1 to [`TASK_ID_CHARS_MAX`] characters, no control characters.
    TaskIdText,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("A task id: 1 to 256 characters, no control characters"))
        .min_length(Some(1))
        .max_length(Some(TASK_ID_CHARS_MAX))
        .pattern(Some(no_control_pattern()))
);

schema_rule!(
    /// A model name, policy version or action language: not blank, at most
    /// [`NAME_CHARS_MAX`] characters.
    NonBlankName,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("Not blank, at most 128 characters"))
        .max_length(Some(NAME_CHARS_MAX))
        .pattern(Some(not_blank_pattern()))
);

schema_rule!(
    /// A client-chosen rollout group: not blank, at most [`NAME_CHARS_MAX`] characters, no
    /// control characters, not starting with `ro_` (the names of default groups of one).
    GroupName,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Not blank, at most 128 characters, no control characters, not starting with `ro_`",
        ))
        .max_length(Some(NAME_CHARS_MAX))
        .pattern(Some(format!(
            "^(?!ro_)[^{CONTROL_CLASS}]*[^{CONTROL_CLASS}{SPACE_CLASS}][^{CONTROL_CLASS}]*$"
        )))
);

schema_rule!(
    /// An ast-grep pattern or YAML rule: not blank, at most [`ACTION_TEXT_BYTES_MAX`] bytes.
    ActionText,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Not blank, at most 65536 bytes of UTF-8 (`maxLength` counts characters)",
        ))
        .max_length(Some(ACTION_TEXT_BYTES_MAX))
        .pattern(Some(not_blank_pattern()))
);

schema_rule!(
    /// One list field of a state update.
    StateItems,
    ArrayBuilder::new()
        .description(Some(
            "At most 64 items, each at most 4096 bytes of UTF-8 (`maxLength` counts characters)",
        ))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(STATE_ITEM_BYTES_MAX)),
        )
        .max_items(Some(STATE_ITEMS_MAX))
);

schema_rule!(
    /// A reward value: finite, within ±[`REWARD_ABS_MAX`].
    RewardValue,
    reward_number().description(Some("A finite number from -1e9 to 1e9"))
);

fn reward_number() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Double,
        )))
        .minimum(Some(-REWARD_ABS_MAX))
        .maximum(Some(REWARD_ABS_MAX))
}

schema_rule!(
    /// A reward's named components.
    RewardComponents,
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "At most 32 components; names not blank, at most 64 characters; values finite, from -1e9 to 1e9",
        ))
        .max_properties(Some(REWARD_COMPONENTS_MAX))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(COMPONENT_NAME_CHARS_MAX))
                .pattern(Some(not_blank_pattern())),
        ))
        .additional_properties(Some(reward_number()))
);

schema_rule!(
    /// A dataset's `source` or `version`: 1 to 128 characters, no control characters, not
    /// starting or ending with white space.
    DatasetName,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "1 to 128 characters, no control characters, no white space at either end",
        ))
        .max_length(Some(128))
        .pattern(Some(format!(
            "^[^{CONTROL_CLASS}{SPACE_CLASS}](?:[^{CONTROL_CLASS}]*[^{CONTROL_CLASS}{SPACE_CLASS}])?$"
        )))
);

schema_rule!(
    /// An SPDX license expression (checked for its shape, not against the license list).
    LicenseExpression,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "An SPDX license expression (SPDX 2.3 annex D): identifiers of `A-Za-z0-9.+-` \
             other than `AND`, `OR`, `WITH`, joined by ` AND ` and ` OR `, an identifier after \
             ` WITH `, parentheses nested at most 16 deep; at most 256 characters. Identifiers \
             are not looked up, so `LicenseRef-...` and new SPDX identifiers are accepted. No \
             regex can state the grammar, hence the format.",
        ))
        .format(Some(utoipa::openapi::SchemaFormat::Custom(
            "spdx-license-expression".to_owned(),
        )))
        .min_length(Some(1))
        .max_length(Some(256))
);

/// RFC 3339 date-times with a time zone whose day exists (leap years included); seconds may be
/// 60. `[Tt]` and `[Zz]`: RFC 3339 allows either case.
const RFC3339_PATTERN: &str = concat!(
    "^(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[048]|[2468][048]|[13579][26])00)-02-29)",
    "[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:[.][0-9]{1,9})?",
    "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
);

schema_rule!(
    /// When a dataset was downloaded: an RFC 3339 date-time with a time zone.
    DownloadedAt,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "An RFC 3339 date-time with a time zone (`2024-05-01T12:00:00Z`), a day that \
             exists, at most 9 fractional digits",
        ))
        .pattern(Some(RFC3339_PATTERN))
);

schema_rule!(
    /// Where a dataset came from.
    DatasetUrl,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "`scheme://...`, at most 2048 characters, no white space or control characters",
        ))
        .max_length(Some(2048))
        .pattern(Some(format!(
            "^[A-Za-z][A-Za-z0-9+.-]*://[^{CONTROL_CLASS}{SPACE_CLASS}]+$"
        )))
);
