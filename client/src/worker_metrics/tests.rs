use super::*;

#[test]
fn the_exposition_has_every_series_with_its_labels() {
    let metrics = WorkerMetrics::new(&["rollouts".into(), "we\"ird".into()], 4);
    metrics.job_started("rollouts");
    metrics.job_started("rollouts");
    metrics.job_ended("rollouts", JobEnd::Completed);
    metrics.job_started("rollouts");
    metrics.job_ended("rollouts", JobEnd::Lost);
    metrics.heartbeat_failed();
    let server = metrics.server(3);
    server.ready.store(true, Ordering::Relaxed);
    server.restarts.fetch_add(2, Ordering::Relaxed);
    metrics.actors_supervised(4);
    metrics.actor_ready(true);
    metrics.actor_restarted(true);
    let text = metrics.render();
    for line in [
        "# TYPE agentd_worker_jobs_running gauge",
        "agentd_worker_jobs_running{queue=\"rollouts\"} 1",
        "agentd_worker_jobs_completed_total{queue=\"rollouts\"} 1",
        "agentd_worker_leases_lost_total{queue=\"rollouts\"} 1",
        "agentd_worker_jobs_failed_total{queue=\"we\\\"ird\"} 0",
        "agentd_worker_slots 4",
        "agentd_worker_heartbeat_failures_total 1",
        "agentd_worker_model_server_ready{gpu=\"3\"} 1",
        "agentd_worker_model_server_up{gpu=\"3\"} 0",
        "agentd_worker_model_server_restarts_total{gpu=\"3\"} 2",
        "agentd_worker_actors 4",
        "agentd_worker_actors_ready 1",
        "agentd_worker_actor_restarts_total 1",
        "agentd_worker_actor_cancel_kills_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    // Every sample line belongs to a family announced just before it.
    let mut family = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap();
        } else if !line.starts_with('#') {
            assert!(line.starts_with(family), "{line} outside {family}");
        }
    }
}

#[test]
fn a_worker_without_servers_or_actors_shows_neither() {
    let text = WorkerMetrics::new(&["q".into()], 1).render();
    assert!(!text.contains("model_server"), "{text}");
    assert!(!text.contains("actor"), "{text}");
}

#[tokio::test]
async fn the_listener_answers_get_metrics_and_nothing_else() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let metrics = Arc::new(WorkerMetrics::new(&["q".into()], 2));
    let server = tokio::spawn(serve(listener, metrics));
    let ask = |request: &'static str| async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let answer = ask("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("agentd_worker_slots 2\n"), "{answer}");
    let answer = ask("GET / HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = ask("POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    server.abort();
}
