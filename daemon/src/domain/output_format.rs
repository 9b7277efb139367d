//! The actor's output format (`<think>/<action>/<state_update>`): the parser and the canonical
//! rendering. The rules, error codes and rendering are in `docs/output-format.md`; the cases in
//! `docs/output-format-cases.json` are shared with the Python client's parser, so both read
//! every output the same way.
//!
//! Pure: no clock, no state. The step route parses a `raw_output` here before the sequencer
//! decides the step, and the SFT view renders parsed steps back with [`render`].

use agentd_schemas::domain_api::{ActionRequest, StateUpdateFields};

/// Longest output, in bytes.
pub const OUTPUT_BYTES_MAX: usize = 256 * 1024;
/// Longest `think`, and longest pattern, rewrite or YAML rule, in bytes.
pub const TEXT_BYTES_MAX: usize = 64 * 1024;
/// Longest action language, in characters.
pub const LANGUAGE_CHARS_MAX: usize = 128;
/// Most items per list of a state update.
pub const ITEMS_MAX: usize = 64;
/// Longest item of a state update (or `next_focus`), in bytes.
pub const ITEM_BYTES_MAX: usize = 4096;

/// The blocks, in the order they must come.
const BLOCKS: [&str; 3] = ["think", "action", "state_update"];

/// A parsed output.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedOutput {
    pub think: Option<String>,
    pub action: ActionRequest,
    pub state_update: Option<StateUpdateFields>,
}

/// Why an output does not parse: a stable code (the table in `docs/output-format.md`) and a
/// message naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FormatError {
    pub code: &'static str,
    pub message: String,
}

fn error(code: &'static str, message: impl Into<String>) -> FormatError {
    FormatError {
        code,
        message: message.into(),
    }
}

/// Parses an actor's output (rules 1 to 6 of `docs/output-format.md`, in that order).
pub fn parse(text: &str) -> Result<ParsedOutput, FormatError> {
    // The checks run in the order of the error table of `docs/output-format.md`.
    if text.trim().is_empty() {
        return Err(error("empty", "the output is empty"));
    }
    if text.len() > OUTPUT_BYTES_MAX {
        return Err(error(
            "too_large",
            format!(
                "the output is {} bytes, over the limit of {OUTPUT_BYTES_MAX}",
                text.len()
            ),
        ));
    }
    let blocks = split_blocks(text.trim())?;
    let content = |wanted: usize| {
        blocks
            .iter()
            .find(|(index, _)| *index == wanted)
            .map(|(_, content)| *content)
    };
    let think = content(0);
    if let Some(think) = think {
        if think.len() > TEXT_BYTES_MAX {
            return Err(error(
                "too_large",
                format!(
                    "<think> is {} bytes, over the limit of {TEXT_BYTES_MAX}",
                    think.len()
                ),
            ));
        }
    }
    for (position, (index, _)) in blocks.iter().enumerate() {
        if blocks[..position]
            .iter()
            .any(|(earlier, _)| earlier == index)
        {
            return Err(error(
                "duplicate_tag",
                format!("<{}> appears more than once", BLOCKS[*index]),
            ));
        }
    }
    for pair in blocks.windows(2) {
        let ((first, _), (second, _)) = (pair[0], pair[1]);
        if second < first {
            return Err(error(
                "out_of_order",
                format!(
                    "<{}> comes after <{}>; the order is think, action, state_update",
                    BLOCKS[second], BLOCKS[first]
                ),
            ));
        }
    }
    let Some(action) = content(1) else {
        return Err(error("missing_action", "there is no <action> block"));
    };
    let action = parse_action(action)?;
    let state_update = content(2).map(parse_state_update).transpose()?;
    Ok(ParsedOutput {
        think: think.map(str::to_owned),
        action,
        state_update,
    })
}

/// The blocks in the order they appear: (index in [`BLOCKS`], trimmed content).
fn split_blocks(text: &str) -> Result<Vec<(usize, &str)>, FormatError> {
    let mut blocks = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(blocks);
        }
        let opened = BLOCKS
            .iter()
            .position(|name| rest.starts_with(&format!("<{name}>")));
        let Some(index) = opened else {
            let shown: String = rest.chars().take(40).collect();
            return Err(error(
                "text_outside_tags",
                format!("text outside the <think>, <action> and <state_update> blocks: {shown:?}"),
            ));
        };
        let name = BLOCKS[index];
        let after = &rest[name.len() + 2..];
        let close = format!("</{name}>");
        match after.find(&close) {
            Some(end) => {
                blocks.push((index, after[..end].trim()));
                rest = &after[end + close.len()..];
            }
            // A stop string (`</action>`, `</state_update>`) removed by the server.
            None if name != "think" => {
                blocks.push((index, after.trim()));
                rest = "";
            }
            None => {
                return Err(error(
                    "unclosed_tag",
                    format!("<{name}> is not closed with {close}"),
                ))
            }
        }
    }
}

fn invalid_action(message: impl Into<String>) -> FormatError {
    error("invalid_action", message)
}

fn parse_action(content: &str) -> Result<ActionRequest, FormatError> {
    // serde reads a struct from a JSON array too; the format wants an object.
    if !content.starts_with('{') {
        return Err(invalid_action("the action is not a JSON object"));
    }
    let action: ActionRequest = serde_json::from_str(content).map_err(|error| {
        invalid_action(format!(
            "the action is not a JSON object {{\"kind\":\"pattern\",\"language\",\"pattern\",\"rewrite\"}} or {{\"kind\":\"rule\",\"yaml\"}}: {error}"
        ))
    })?;
    let bounded = |field: &str, value: &str| {
        if value.len() > TEXT_BYTES_MAX {
            return Err(invalid_action(format!(
                "{field} is {} bytes, over the limit of {TEXT_BYTES_MAX}",
                value.len()
            )));
        }
        Ok(())
    };
    let not_blank = |field: &str, value: &str| {
        if value.trim().is_empty() {
            return Err(invalid_action(format!("{field} must not be blank")));
        }
        Ok(())
    };
    match &action {
        ActionRequest::Pattern {
            language,
            pattern,
            rewrite,
        } => {
            not_blank("language", language)?;
            if language.chars().count() > LANGUAGE_CHARS_MAX {
                return Err(invalid_action(format!(
                    "language must be at most {LANGUAGE_CHARS_MAX} characters"
                )));
            }
            not_blank("pattern", pattern)?;
            bounded("pattern", pattern)?;
            bounded("rewrite", rewrite)?;
        }
        ActionRequest::Rule { yaml } => {
            not_blank("yaml", yaml)?;
            bounded("yaml", yaml)?;
            check_rule_yaml(yaml)?;
        }
    }
    Ok(action)
}

/// The shape checks of a rule (its full syntax is the sandbox's to check): a top-level `rule:`
/// key, and no line starting with a tab, which YAML forbids as indentation (a tab after spaces
/// may be content of a block scalar: a Go `fix:` indented by gofmt).
fn check_rule_yaml(yaml: &str) -> Result<(), FormatError> {
    if let Some(number) = yaml.lines().position(|line| line.starts_with('\t')) {
        return Err(invalid_action(format!(
            "the rule's line {} is indented with a tab, which YAML forbids",
            number + 1
        )));
    }
    if !yaml.lines().any(|line| line.starts_with("rule:")) {
        return Err(invalid_action(
            "the rule has no top-level `rule:` key (an ast-grep rule needs one)",
        ));
    }
    Ok(())
}

fn invalid_update(message: impl Into<String>) -> FormatError {
    error("invalid_state_update", message)
}

fn parse_state_update(content: &str) -> Result<StateUpdateFields, FormatError> {
    if !content.starts_with('{') {
        return Err(invalid_update("the state update is not a JSON object"));
    }
    let update: StateUpdateFields = serde_json::from_str(content).map_err(|error| {
        invalid_update(format!(
            "the state update is not a JSON object of goals, constraints, decisions, hypotheses, history, open_issues, next_focus, forget: {error}"
        ))
    })?;
    let forget = update.forget.clone().unwrap_or_default();
    let remove = forget.remove.clone().unwrap_or_default();
    for (field, items) in [
        ("goals", &update.goals),
        ("constraints", &update.constraints),
        ("decisions", &update.decisions),
        ("hypotheses", &update.hypotheses),
        ("history", &update.history),
        ("open_issues", &update.open_issues),
        ("forget.remove.goals", &remove.goals),
        ("forget.remove.constraints", &remove.constraints),
        ("forget.remove.decisions", &remove.decisions),
        ("forget.remove.hypotheses", &remove.hypotheses),
        ("forget.remove.history", &remove.history),
        ("forget.remove.open_issues", &remove.open_issues),
        ("forget.resolve", &forget.resolve),
        ("forget.retract", &forget.retract),
    ] {
        if items.len() > ITEMS_MAX {
            return Err(invalid_update(format!(
                "{field} has {} items, over the limit of {ITEMS_MAX}",
                items.len()
            )));
        }
        if let Some(long) = items.iter().position(|item| item.len() > ITEM_BYTES_MAX) {
            return Err(invalid_update(format!(
                "{field}[{long}] is over the limit of {ITEM_BYTES_MAX} bytes"
            )));
        }
    }
    if update
        .next_focus
        .as_ref()
        .is_some_and(|focus| focus.len() > ITEM_BYTES_MAX)
    {
        return Err(invalid_update(format!(
            "next_focus is over the limit of {ITEM_BYTES_MAX} bytes"
        )));
    }
    Ok(without_empty_fields(update))
}

/// Drops the fields that say nothing (an empty `next_focus`, an empty `forget` or `remove`), so
/// an update has one form: what the canonical rendering writes.
fn without_empty_fields(mut update: StateUpdateFields) -> StateUpdateFields {
    if update.next_focus.as_deref() == Some("") {
        update.next_focus = None;
    }
    if let Some(forget) = &mut update.forget {
        if forget
            .remove
            .as_ref()
            .is_some_and(|remove| remove == &Default::default())
        {
            forget.remove = None;
        }
    }
    if update
        .forget
        .as_ref()
        .is_some_and(|forget| forget == &Default::default())
    {
        update.forget = None;
    }
    update
}

/// Compact JSON with `</` written `<\/` (a JSON escape of the same text), so a value that holds
/// a closing tag cannot close its block: the rendering always parses back.
fn block_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .expect("actions and updates always serialize")
        .replace("</", "<\\/")
}

/// The canonical rendering of a parsed output (`docs/output-format.md`, "Canonical
/// rendering"): `parse(render(x)) == x` and `render(parse(render(x))) == render(x)`.
pub fn render(
    think: Option<&str>,
    action: &ActionRequest,
    update: Option<&StateUpdateFields>,
) -> String {
    let mut out = String::new();
    if let Some(think) = think {
        out.push_str("<think>\n");
        out.push_str(think);
        out.push_str("\n</think>\n");
    }
    out.push_str("<action>\n");
    out.push_str(&block_json(action));
    out.push_str("\n</action>");
    if let Some(update) = update {
        out.push_str("\n<state_update>\n");
        out.push_str(&block_json(update));
        out.push_str("\n</state_update>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The shared cases (`docs/output-format-cases.json`), the same file the Python tests read.
    fn cases() -> Vec<Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/output-format-cases.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let file: Value = serde_json::from_str(&text).unwrap();
        file["cases"].as_array().unwrap().clone()
    }

    fn input(case: &Value) -> String {
        if let Some(output) = case["output"].as_str() {
            return output.to_owned();
        }
        if case["output_repeat"].is_object() {
            let part = &case["output_repeat"];
            return part["text"]
                .as_str()
                .unwrap()
                .repeat(part["times"].as_u64().unwrap() as usize);
        }
        case["output_parts"]
            .as_array()
            .expect("output or output_parts")
            .iter()
            .map(|part| match part.as_str() {
                Some(text) => text.to_owned(),
                None => part["text"]
                    .as_str()
                    .unwrap()
                    .repeat(part["times"].as_u64().unwrap() as usize),
            })
            .collect()
    }

    #[test]
    fn every_shared_case_parses_as_the_file_says() {
        let cases = cases();
        assert!(cases.len() >= 30);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let parsed = parse(&input(&case));
            if let Some(code) = case["error"].as_str() {
                let error = parsed.expect_err(name);
                assert_eq!(error.code, code, "{name}: {}", error.message);
                continue;
            }
            let parsed = parsed.unwrap_or_else(|error| panic!("{name}: {error}"));
            let expect = &case["expect"];
            assert_eq!(
                parsed.think.as_deref(),
                expect["think"].as_str(),
                "{name}: think"
            );
            assert_eq!(
                serde_json::to_value(&parsed.action).unwrap(),
                expect["action"],
                "{name}: action"
            );
            assert_eq!(
                parsed
                    .state_update
                    .as_ref()
                    .map(|update| serde_json::to_value(update).unwrap()),
                (!expect["state_update"].is_null()).then(|| expect["state_update"].clone()),
                "{name}: state_update"
            );
            let canonical = render(
                parsed.think.as_deref(),
                &parsed.action,
                parsed.state_update.as_ref(),
            );
            assert_eq!(canonical, expect["canonical"].as_str().unwrap(), "{name}");
            let again = parse(&canonical).unwrap();
            assert_eq!(again, parsed, "{name}: the canonical rendering parses back");
        }
    }
}
