use super::*;

/// An error whose text repeats its source's, as reqwest's did with its URL.
#[derive(Debug)]
struct Layer {
    text: &'static str,
    source: Option<Box<Layer>>,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.text)
    }
}

impl std::error::Error for Layer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|layer| layer as &(dyn std::error::Error + 'static))
    }
}

#[test]
fn each_cause_is_named_once() {
    let chain = Layer {
        text: "error sending request for url (http://h/x)",
        source: Some(Box::new(Layer {
            text: "error sending request for url (http://h/x)",
            source: Some(Box::new(Layer {
                text: "client error (Connect)",
                source: Some(Box::new(Layer {
                    text: "Connection refused",
                    source: None,
                })),
            })),
        })),
    };
    assert_eq!(
        distinct_causes(&chain),
        "error sending request for url (http://h/x): client error (Connect): Connection refused"
    );
}

#[test]
fn a_url_without_scheme_or_host_is_refused_up_front() {
    for url in [
        "",
        "127.0.0.1:7070",
        "localhost:7070",
        "ftp://h:1",
        "http://",
    ] {
        let error = Client::new(url, None).err().unwrap();
        assert!(
            error.to_string().contains("expected http://HOST:PORT"),
            "{url}: {error}"
        );
    }
    for url in ["http://127.0.0.1:7070", "https://agentd.lab:7443/"] {
        let client = Client::new(url, None).unwrap();
        assert_eq!(client.base_url(), url.trim_end_matches('/'));
    }
}

#[test]
fn an_unauthorized_answer_hints_at_the_token() {
    let refused = ClientError::Api {
        status: 401,
        code: "unauthorized".into(),
        message: "missing bearer token".into(),
    };
    let hint = refused.hint().expect("a 401 has a hint");
    assert!(
        hint.contains("--token") && hint.contains("AGENTD_TOKEN"),
        "{hint}"
    );
    let other = ClientError::Api {
        status: 404,
        code: "not_found".into(),
        message: "job job_1 not found".into(),
    };
    assert_eq!(other.hint(), None);
}
