//! The two text formats of `/metrics`: OpenMetrics (what the metrics library writes, and what a
//! Prometheus server asks for), and the classic Prometheus text format 0.0.4 that older parsers,
//! `promtool check metrics` and most scrapers other than Prometheus itself read. Chosen by the
//! request's `Accept`, as the Prometheus client libraries do: OpenMetrics only when asked.
//!
//! The classic text is made from the OpenMetrics text: a counter's family takes its `_total`
//! name, an info metric is a gauge named `..._info`, `_created` samples, `# UNIT` lines and
//! the `# EOF` line go.

/// The content type of each format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|range| {
            let mut parts = range.split(';');
            let kind = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim().strip_prefix("q="), Some(q) if q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)));
            kind.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// The classic text format of an OpenMetrics exposition.
pub fn classic(openmetrics: &str) -> String {
    // Family name -> its type, from the `# TYPE` lines (they come before their samples).
    let mut types: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                types.insert(name, kind);
            }
        }
    }
    let renamed = |name: &str| -> String {
        match types.get(name) {
            Some(&"counter") => format!("{name}_total"),
            Some(&"info") => format!("{name}_info"),
            _ => name.to_string(),
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = match kind {
                "counter" | "gauge" | "histogram" | "summary" => kind,
                "info" | "stateset" => "gauge",
                _ => "untyped",
            };
            out.push_str(&format!("# TYPE {} {kind}\n", renamed(name)));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // OpenMetrics escapes `"` in HELP; the classic format does not.
            out.push_str(&format!("# HELP {} {}\n", renamed(name), help.replace("\\\"", "\"")));
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        if line[..name_end].ends_with("_created") {
            continue;
        }
        // An exemplar (` # {...} value`) has no place in the classic format.
        match line.find(" # ") {
            Some(at) => out.push_str(&line[..at]),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_is_chosen_only_when_asked() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }

    #[test]
    fn counters_and_infos_take_their_classic_names() {
        let om = "# HELP x_requests Requests \\\"seen\\\".\n# TYPE x_requests counter\nx_requests_total{a=\"b\"} 3\nx_requests_created{a=\"b\"} 1.7e9\n\
                  # HELP x_build Build.\n# TYPE x_build info\nx_build_info{version=\"1\"} 1\n# TYPE x_up gauge\n# UNIT x_up seconds\nx_up 1 # {trace=\"a\"} 1\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP x_requests_total Requests \"seen\".\n# TYPE x_requests_total counter\nx_requests_total{a=\"b\"} 3\n\
             # HELP x_build_info Build.\n# TYPE x_build_info gauge\nx_build_info{version=\"1\"} 1\n# TYPE x_up gauge\nx_up 1\n"
        );
    }
}
