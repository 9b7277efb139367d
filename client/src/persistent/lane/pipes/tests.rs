use super::*;
use std::process::Stdio;

async fn lines_of(script: &str) -> Vec<Result<Vec<u8>, Vec<u8>>> {
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = LineReader::new(child.stdout.take());
    let mut lines = Vec::new();
    loop {
        match reader.next().await {
            ReadLine::Line(line) => lines.push(Ok(line)),
            ReadLine::TooLong(head) => lines.push(Err(head)),
            ReadLine::Eof => break,
        }
    }
    child.wait().await.unwrap();
    lines
}

#[tokio::test]
async fn stdout_splits_into_capped_lines_and_a_last_line_without_newline_counts() {
    let too_long = ACTOR_LINE_BYTES_MAX + 10;
    let lines = lines_of(&format!(
        "printf 'first\\n\\n'; head -c {too_long} /dev/zero | tr '\\0' x; printf '\\nafter\\nlast'"
    ))
    .await;
    assert_eq!(
        lines.len(),
        5,
        "{:?}",
        lines
            .iter()
            .map(|l| l.as_ref().map_or_else(|h| h.len(), |l| l.len()))
            .collect::<Vec<_>>()
    );
    assert_eq!(lines[0], Ok(b"first".to_vec()));
    assert_eq!(lines[1], Ok(Vec::new()));
    let head = lines[2].clone().unwrap_err();
    assert_eq!(head.len(), LONG_LINE_HEAD_BYTES);
    assert!(head.iter().all(|byte| *byte == b'x'));
    assert_eq!(lines[3], Ok(b"after".to_vec()));
    assert_eq!(lines[4], Ok(b"last".to_vec()));
}

#[tokio::test]
async fn a_line_of_exactly_the_cap_is_still_a_line() {
    let lines = lines_of(&format!(
        "head -c {ACTOR_LINE_BYTES_MAX} /dev/zero | tr '\\0' y; echo"
    ))
    .await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].as_ref().map(Vec::len), Ok(ACTOR_LINE_BYTES_MAX));
}
