//! The Python client's table of error codes (`client/python/agentd_client/client.py`,
//! `ERROR_CODES`) is the shared enum's, code for code and status for status.

use agentd_schemas::ErrorCode;
use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn the_python_client_knows_every_error_code_with_its_status() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/python/agentd_client/client.py");
    let text = std::fs::read_to_string(path).unwrap();
    let table = text
        .split("ERROR_CODES = {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("ERROR_CODES = { ... } in client.py");
    let python: BTreeMap<String, u16> = table
        .lines()
        .filter_map(|line| {
            let (name, status) = line.trim().trim_end_matches(',').split_once(':')?;
            Some((
                name.trim().trim_matches('"').to_owned(),
                status.trim().parse().ok()?,
            ))
        })
        .collect();
    let rust: BTreeMap<String, u16> = ErrorCode::ALL
        .iter()
        .map(|code| (code.as_str().to_owned(), code.status()))
        .collect();
    assert_eq!(python, rust);
}
