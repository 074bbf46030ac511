//! Grafana provisioning (examples/grafana/provisioning): every file parses into Grafana's
//! provisioning format with no key Grafana does not know, every reference resolves, alerts
//! route as documented, and the Grafana alert rules are the Prometheus rules, alert by alert.
//! (Their queries against a real scrape and promtool: observe.rs.)

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::observe::{example, metric_names};

type Labels = BTreeMap<String, String>;

/// A Prometheus rules file (examples/prometheus/jailsink-alerts.yml).
#[derive(Deserialize)]
pub(crate) struct PromFile {
    groups: Vec<PromGroup>,
}

#[derive(Deserialize)]
struct PromGroup {
    rules: Vec<PromRule>,
}

/// One alerting (or recording) rule of a Prometheus rules file.
#[derive(Deserialize)]
pub(crate) struct PromRule {
    alert: Option<String>,
    pub(crate) expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
}

/// The alerting rules of the shipped Prometheus rules files (the host's and the fleet's).
pub(crate) fn prometheus_alerts() -> Vec<PromRule> {
    let mut rules = parse_prometheus(&example("prometheus/jailsink-alerts.yml"));
    rules.extend(parse_prometheus(&example(
        "prometheus/jailsink-fleet-alerts.yml",
    )));
    rules
}

fn parse_prometheus(text: &str) -> Vec<PromRule> {
    let file: PromFile = serde_yaml_ng::from_str(text).unwrap();
    file.groups
        .into_iter()
        .flat_map(|g| g.rules)
        .filter(|r| r.alert.is_some())
        .collect()
}

// Grafana's alert rule provisioning format (grafana.com: "Use configuration files to provision
// alerting resources"). deny_unknown_fields: a misspelt key is an error here, where Grafana
// would ignore it.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RulesFile {
    api_version: u32,
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleGroup {
    org_id: u32,
    name: String,
    folder: String,
    interval: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    uid: String,
    title: String,
    condition: String,
    data: Vec<Query>,
    no_data_state: String,
    exec_err_state: String,
    #[serde(rename = "for")]
    for_: String,
    dashboard_uid: Option<String>,
    panel_id: Option<u64>,
    is_paused: Option<bool>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Query {
    ref_id: String,
    relative_time_range: Option<TimeRange>,
    datasource_uid: String,
    model: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeRange {
    from: u64,
    to: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DatasourcesFile {
    api_version: u32,
    datasources: Vec<Datasource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Datasource {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    uid: String,
    org_id: u32,
    access: String,
    url: String,
    is_default: bool,
    editable: bool,
    json_data: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProvidersFile {
    api_version: u32,
    providers: Vec<Provider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Provider {
    name: String,
    org_id: u32,
    #[serde(rename = "type")]
    kind: String,
    folder: String,
    folder_uid: String,
    disable_deletion: bool,
    allow_ui_updates: bool,
    update_interval_seconds: u32,
    options: ProviderOptions,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProviderOptions {
    path: String,
    folders_from_files_structure: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ContactPointsFile {
    api_version: u32,
    contact_points: Vec<ContactPoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ContactPoint {
    org_id: u32,
    name: String,
    receivers: Vec<Receiver>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Receiver {
    uid: String,
    #[serde(rename = "type")]
    kind: String,
    settings: BTreeMap<String, serde_json::Value>,
    disable_resolve_message: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PoliciesFile {
    api_version: u32,
    policies: Vec<Policy>,
}

/// A notification policy; the root one has an org_id, routes have matchers.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Policy {
    #[serde(rename = "orgId")]
    org_id: Option<u32>,
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    #[serde(default)]
    object_matchers: Vec<[String; 3]>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
    #[serde(rename = "continue")]
    continue_: Option<bool>,
    #[serde(default)]
    routes: Vec<Policy>,
}

fn provisioning(path: &str) -> String {
    example(&format!("grafana/provisioning/{path}"))
}

fn parse<T: serde::de::DeserializeOwned>(path: &str, text: &str) -> T {
    serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn rules_file() -> RulesFile {
    let path = "alerting/jailsink-rules.yaml";
    parse(path, &provisioning(path))
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&example("grafana/jailsink-dashboard.json")).unwrap()
}

/// The Prometheus query (refId A) of every Grafana alert rule.
pub(crate) fn grafana_rule_queries() -> Vec<String> {
    let mut exprs = Vec::new();
    for group in rules_file().groups {
        for rule in group.rules {
            for query in rule.data.iter().filter(|q| q.datasource_uid != EXPR) {
                let expr = query.model["expr"].as_str();
                exprs.push(
                    expr.unwrap_or_else(|| panic!("{}: no expr", rule.title))
                        .into(),
                );
            }
        }
    }
    exprs
}

/// The datasource uid of Grafana's server-side expressions (reduce, threshold, math).
const EXPR: &str = "__expr__";

/// A uid Grafana accepts: at most 40 characters of letters, digits, `-` and `_`.
fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 40
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A Prometheus-style duration (`1h30m`, `90s`, `0s`) in milliseconds, as Grafana parses
/// `for`, `interval` and the policy timings.
fn millis(duration: &str) -> Option<u64> {
    let re = regex::Regex::new(r"(\d+)(ms|y|w|d|h|m|s)").unwrap();
    let mut total = 0u64;
    let mut end = 0;
    for c in re.captures_iter(duration) {
        let whole = c.get(0).unwrap();
        if whole.start() != end {
            return None;
        }
        end = whole.end();
        let unit = match &c[2] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => 365 * 86_400_000,
        };
        total += c[1].parse::<u64>().ok()? * unit;
    }
    (end == duration.len() && end > 0).then_some(total)
}

/// Grafana's threshold types for PromQL's comparison operators.
const COMPARISONS: [(&str, &str); 6] = [
    (">=", "gte"),
    ("<=", "lte"),
    ("==", "eq"),
    ("!=", "ne"),
    (">", "gt"),
    ("<", "lt"),
];

/// Splits a Prometheus alert expression at its last comparison outside brackets and quotes:
/// (query, operator, threshold). `a > 512 * 1024` gives ("a", ">", 536870912). An expression
/// joined by a set operator (`a > 0 and delta(a[10m]) > 0`) is not split: its series are the
/// ones both sides keep, with the left side's values, so Grafana must query it whole and fire
/// on any of them (the shipped ones keep only values > 0): (expr, ">", 0).
fn split_comparison(expr: &str) -> Option<(String, &'static str, f64)> {
    if has_set_operator(expr) {
        return Some((expr.trim().to_string(), ">", 0.0));
    }
    let bytes = expr.as_bytes();
    let (mut depth, mut quoted, mut last) = (0i32, false, None);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => quoted = !quoted,
            b'(' | b'{' | b'[' if !quoted => depth += 1,
            b')' | b'}' | b']' if !quoted => depth -= 1,
            _ if !quoted && depth == 0 => {
                if let Some((op, _)) = COMPARISONS.iter().find(|(op, _)| expr[i..].starts_with(op))
                {
                    last = Some((i, *op));
                    i += op.len();
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let (at, op) = last?;
    // The threshold: a product of numbers (`512 * 1024 * 1024`).
    let mut value = 1.0;
    for factor in expr[at + op.len()..].split('*') {
        value *= factor.trim().parse::<f64>().ok()?;
    }
    Some((expr[..at].trim().to_string(), op, value))
}

/// Whether `expr` has `and`, `or` or `unless` outside brackets and quotes.
fn has_set_operator(expr: &str) -> bool {
    let (mut depth, mut quoted) = (0i32, false);
    let mut word = String::new();
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' | '{' | '[' if !quoted => depth += 1,
            ')' | '}' | ']' if !quoted => depth -= 1,
            _ => {}
        }
        // Whole identifiers only: `rate_and_more` holds no operator.
        if (c.is_ascii_alphanumeric() || c == '_' || c == ':') && !quoted && depth == 0 {
            word.push(c);
            continue;
        }
        if matches!(word.as_str(), "and" | "or" | "unless") {
            return true;
        }
        word.clear();
    }
    false
}

fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a Grafana rule computes, in Prometheus terms: (query, operator, threshold, the refId
/// of the reduced value). Panics when its steps are not query → reduce → threshold.
fn as_prometheus(rule: &Rule) -> (String, &'static str, f64, String) {
    let step = |ref_id: &str| {
        rule.data
            .iter()
            .find(|q| q.ref_id == ref_id)
            .unwrap_or_else(|| panic!("{}: no step {ref_id}", rule.title))
    };
    let condition = step(&rule.condition);
    assert_eq!(condition.model["type"], "threshold", "{}", rule.title);
    let evaluator = &condition.model["conditions"][0]["evaluator"];
    let kind = evaluator["type"].as_str().unwrap_or_default();
    let op = COMPARISONS
        .iter()
        .find(|(_, k)| *k == kind)
        .map(|(op, _)| *op)
        .unwrap_or_else(|| panic!("{}: threshold type {kind}", rule.title));
    let threshold = evaluator["params"][0].as_f64().unwrap();
    let reduce = step(condition.model["expression"].as_str().unwrap());
    assert_eq!(reduce.model["type"], "reduce", "{}", rule.title);
    assert_eq!(reduce.model["reducer"], "last", "{}", rule.title);
    let query = step(reduce.model["expression"].as_str().unwrap());
    assert_ne!(query.datasource_uid, EXPR, "{}", rule.title);
    let expr = query.model["expr"].as_str().unwrap().to_string();
    (expr, op, threshold, reduce.ref_id.clone())
}

/// Every way the Grafana rules and the Prometheus alerts differ, alert by alert: a missing
/// alert, expression (query, comparison, threshold), `for`, labels, annotations.
fn disagreements(prom: &[PromRule], grafana: &RulesFile) -> Vec<String> {
    let mut problems = Vec::new();
    let prom: BTreeMap<&str, &PromRule> = prom
        .iter()
        .map(|r| (r.alert.as_deref().unwrap(), r))
        .collect();
    let rules: BTreeMap<&str, &Rule> = grafana
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .map(|r| (r.title.as_str(), r))
        .collect();
    for name in prom.keys().filter(|n| !rules.contains_key(*n)) {
        problems.push(format!("{name}: in Prometheus, not in Grafana"));
    }
    for name in rules.keys().filter(|n| !prom.contains_key(*n)) {
        problems.push(format!("{name}: in Grafana, not in Prometheus"));
    }
    for (name, p) in &prom {
        let Some(g) = rules.get(name) else { continue };
        let (query, op, threshold, value_ref) = as_prometheus(g);
        match split_comparison(&p.expr) {
            Some((p_query, p_op, p_threshold)) => {
                if squeeze(&p_query) != squeeze(&query) {
                    problems.push(format!("{name}: query `{query}` != `{p_query}`"));
                }
                if (p_op, p_threshold) != (op, threshold) {
                    problems.push(format!(
                        "{name}: condition {op} {threshold} != {p_op} {p_threshold}"
                    ));
                }
            }
            None => problems.push(format!("{name}: no comparison in `{}`", p.expr)),
        }
        let p_for = millis(p.for_.as_deref().unwrap_or("0s"));
        if p_for != millis(&g.for_) {
            problems.push(format!("{name}: for {} != {:?}", g.for_, p.for_));
        }
        if p.labels != g.labels {
            problems.push(format!("{name}: labels {:?} != {:?}", g.labels, p.labels));
        }
        // Grafana's `$value` is every step's value; the reduced one is `$values.B.Value`.
        let value = format!("$values.{value_ref}.Value");
        let translated: Labels = p
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("$value", &value)))
            .collect();
        if translated != g.annotations {
            problems.push(format!(
                "{name}: annotations {:?} != {translated:?}",
                g.annotations
            ));
        }
    }
    problems
}

#[test]
fn grafana_rules_are_the_prometheus_rules_alert_by_alert() {
    let prom = prometheus_alerts();
    let grafana = rules_file();
    assert!(prom.len() >= 8);
    let problems = disagreements(&prom, &grafana);
    assert!(problems.is_empty(), "{problems:#?}");

    // The comparison sees each kind of drift, in either file.
    let text = provisioning("alerting/jailsink-rules.yaml");
    let prom_text = example("prometheus/jailsink-alerts.yml");
    let drifted = |from: &str, to: &str| {
        assert!(text.contains(from), "`{from}`");
        let rules: RulesFile = parse("drifted", &text.replacen(from, to, 1));
        disagreements(&prom, &rules)
    };
    for (from, to, wanted) in [
        (
            "params: [60]",
            "params: [61]",
            "JailsinkBruteForce: condition",
        ),
        (
            "type: gt, params: [20]",
            "type: lt, params: [20]",
            "JailsinkBanStorm: condition",
        ),
        ("[5m])) * 60'", "[10m])) * 60'", "JailsinkBruteForce: query"),
        ("for: 15m", "for: 10m", "JailsinkBruteForce: for"),
        (
            "severity: critical",
            "severity: warning",
            "JailsinkDown: labels",
        ),
        (
            "title: JailsinkBanStorm",
            "title: JailsinkBanFlood",
            "JailsinkBanFlood: in Grafana",
        ),
        (
            "receives no syslog",
            "hears nothing",
            "JailsinkNotReceiving: annotations",
        ),
    ] {
        let found = drifted(from, to);
        assert!(
            found.iter().any(|p| p.starts_with(wanted)),
            "`{from}` -> `{to}` not seen: {found:#?}"
        );
    }
    let added = prom_text.replace(
        "    rules:\n",
        "    rules:\n      - alert: JailsinkNew\n        expr: up == 2\n",
    );
    let mut with_new = parse_prometheus(&added);
    with_new.extend(parse_prometheus(&example(
        "prometheus/jailsink-fleet-alerts.yml",
    )));
    let found = disagreements(&with_new, &grafana);
    assert_eq!(found, ["JailsinkNew: in Prometheus, not in Grafana"]);
}

#[test]
fn comparisons_split_like_promql() {
    let (query, op, value) = split_comparison(
        r#"sum by (instance) (rate(x{job="a", path=~">|<"}[5m])) * 60 > 512 * 1024"#,
    )
    .unwrap();
    assert_eq!(
        (query.as_str(), op, value),
        (
            r#"sum by (instance) (rate(x{job="a", path=~">|<"}[5m])) * 60"#,
            ">",
            524288.0
        )
    );
    assert_eq!(split_comparison("up == 0").unwrap().1, "==");
    assert_eq!(split_comparison("a >= 2").unwrap().1, ">=");
    assert!(split_comparison("sum(rate(x[5m]))").is_none());
    // A set operator: queried whole, firing on any series it keeps.
    let both = r#"x{job="a"} > 0 and delta(x{job="a"}[10m]) > 0"#;
    assert_eq!(split_comparison(both), Some((both.to_string(), ">", 0.0)));
    assert_eq!(split_comparison(r#"x{l="and"} > 1"#).unwrap().2, 1.0);
    assert_eq!(split_comparison("x_and_y > 2").unwrap().2, 2.0);
    assert_eq!(millis("1h30m"), Some(5_400_000));
    assert_eq!(millis("0s"), Some(0));
    for bad in ["", "5", "m", "5 m", "1h-2m", "10x"] {
        assert_eq!(millis(bad), None, "{bad}");
    }
}

#[test]
fn provisioning_files_have_what_grafana_requires() {
    let dashboard = dashboard();
    // Data source: the uid everything else names.
    let path = "datasources/jailsink.yaml";
    let sources: DatasourcesFile = parse(path, &provisioning(path));
    assert_eq!(sources.api_version, 1);
    let [source] = &sources.datasources[..] else {
        panic!("{path}: one data source")
    };
    assert!(valid_uid(&source.uid), "{}", source.uid);
    assert_eq!(
        (source.kind.as_str(), source.access.as_str()),
        ("prometheus", "proxy")
    );
    assert!(source.url.starts_with("http://") || source.url.starts_with("https://"));
    assert!(!source.name.is_empty() && source.org_id == 1 && !source.is_default);
    assert!(!source.editable);
    let interval = source.json_data["timeInterval"].as_str().unwrap();
    assert!(millis(interval).is_some(), "{interval}");

    // Dashboard provider: a file provider whose folder holds the rules too.
    let path = "dashboards/jailsink.yaml";
    let providers: ProvidersFile = parse(path, &provisioning(path));
    assert_eq!(providers.api_version, 1);
    let [provider] = &providers.providers[..] else {
        panic!("{path}: one provider")
    };
    assert_eq!(provider.kind, "file");
    assert!(!provider.name.is_empty() && provider.org_id == 1);
    assert!(valid_uid(&provider.folder_uid));
    assert!(provider.options.path.starts_with('/'));
    assert!(!provider.options.folders_from_files_structure);
    assert!(!provider.disable_deletion && !provider.allow_ui_updates);
    assert!(provider.update_interval_seconds >= 10);

    // The dashboard asks for the data source through ${datasource}, preset to the provisioned uid.
    let variable = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["type"] == "datasource")
        .unwrap();
    assert_eq!(variable["query"], "prometheus");
    assert_eq!(variable["current"]["value"], source.uid.as_str());
    let var_ref = format!("${{{}}}", variable["name"].as_str().unwrap());
    let mut with_source = dashboard["panels"].as_array().unwrap().clone();
    with_source.extend(dashboard["annotations"]["list"].as_array().unwrap().clone());
    for item in &with_source {
        if item["datasource"]["type"] == "prometheus" {
            assert_eq!(item["datasource"]["uid"], var_ref.as_str(), "{item}");
        }
    }

    // Alert rules.
    let rules = rules_file();
    assert_eq!(rules.api_version, 1);
    let (mut uids, mut names) = (BTreeSet::new(), BTreeSet::new());
    let panels: BTreeMap<u64, &serde_json::Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_u64().unwrap(), p))
        .collect();
    assert!(!rules.groups.is_empty());
    // Every group (jailsink's, and any added later such as fleet alerts) and every rule.
    for (group, rule) in rules
        .groups
        .iter()
        .flat_map(|g| g.rules.iter().map(move |r| (g, r)))
    {
        assert_eq!(group.org_id, 1);
        assert!(!group.name.is_empty());
        names.insert(&group.name);
        assert_eq!(group.folder, provider.folder, "rules beside the dashboard");
        let every = millis(&group.interval).unwrap();
        assert!(every >= 10_000, "interval {}", group.interval);
        let t = &rule.title;
        assert!(
            valid_uid(&rule.uid) && uids.insert(&rule.uid),
            "{t}: uid {}",
            rule.uid
        );
        let pending = millis(&rule.for_).unwrap_or_else(|| panic!("{t}: for {}", rule.for_));
        assert_eq!(
            pending % every,
            0,
            "{t}: for is not a multiple of the interval"
        );
        assert!(["Alerting", "NoData", "OK", "KeepLast"].contains(&rule.no_data_state.as_str()));
        assert!(["Alerting", "Error", "OK", "KeepLast"].contains(&rule.exec_err_state.as_str()));
        assert_eq!(rule.is_paused, Some(false), "{t}");
        assert!(rule.labels.contains_key("severity"), "{t}");
        assert!(rule.annotations.contains_key("summary"), "{t}");
        let mut refs = BTreeSet::new();
        for step in &rule.data {
            assert!(
                refs.insert(step.ref_id.as_str()),
                "{t}: two {}",
                step.ref_id
            );
            assert_eq!(step.model["refId"], step.ref_id.as_str(), "{t}");
            if step.datasource_uid == EXPR {
                let kind = step.model["type"].as_str().unwrap_or_default();
                assert!(
                    ["reduce", "threshold", "math", "resample"].contains(&kind),
                    "{t}"
                );
                // An expression reads a step defined before it.
                let input = step.model["expression"].as_str().unwrap_or_default();
                assert!(refs.contains(input) && input != step.ref_id, "{t}: {input}");
            } else {
                assert_eq!(step.datasource_uid, source.uid, "{t}: unknown data source");
                let range = step
                    .relative_time_range
                    .as_ref()
                    .expect("relativeTimeRange");
                assert!(range.from > range.to, "{t}: empty time range");
                assert_eq!(step.model["instant"], true, "{t}");
            }
        }
        assert!(refs.contains(rule.condition.as_str()), "{t}: condition");
        // The rule links to the dashboard panel that shows what it watches.
        assert_eq!(
            rule.dashboard_uid.as_deref(),
            dashboard["uid"].as_str(),
            "{t}"
        );
        let panel = panels[&rule.panel_id.unwrap_or_else(|| panic!("{t}: panelId"))];
        let (query, ..) = as_prometheus(rule);
        let watched = metric_names(&query);
        let shown: BTreeSet<String> = panel["targets"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|q| metric_names(q["expr"].as_str().unwrap()))
            .collect();
        assert!(
            !watched.is_disjoint(&shown),
            "{t}: panel {} shows none of {watched:?}",
            panel["title"]
        );
    }
    assert_eq!(names.len(), rules.groups.len(), "group names are unique");
    // Only JailsinkDown alerts on no data (see the file's header).
    for rule in rules.groups.iter().flat_map(|g| &g.rules) {
        let down = rule.title == "JailsinkDown";
        assert_eq!(rule.no_data_state == "Alerting", down, "{}", rule.title);
    }

    // The dashboard's ban annotations and its link to these rules.
    let bans = dashboard["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Bans")
        .expect("a Bans annotation");
    assert_eq!(bans["enable"], true);
    assert!(metric_names(bans["expr"].as_str().unwrap()).contains("jailsink_bans_total"));
    let link = format!("/alerting/list?search=namespace:{}", provider.folder);
    assert!(
        dashboard["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["url"] == link.as_str()),
        "no link to {link}"
    );
}

/// The contact points file with its commented examples (Telegram, Slack, webhook
/// authorization) uncommented: indented comments that begin lowercase or with YAML.
fn uncommented(text: &str) -> String {
    let yaml = regex::Regex::new(r"(?m)^(\s+)# ([a-z\-]|  )").unwrap();
    yaml.replace_all(text, "$1$2").into_owned()
}

fn contact_points(text: &str) -> BTreeMap<String, Vec<Receiver>> {
    let path = "alerting/jailsink-contact-points.yaml";
    let file: ContactPointsFile = parse(path, text);
    assert_eq!(file.api_version, 1);
    let mut uids = BTreeSet::new();
    let mut points = BTreeMap::new();
    for point in file.contact_points {
        assert_eq!(point.org_id, 1);
        for r in &point.receivers {
            assert!(
                valid_uid(&r.uid) && uids.insert(r.uid.clone()),
                "uid {}",
                r.uid
            );
            let required: &[&str] = match r.kind.as_str() {
                "email" => &["addresses"],
                "webhook" => &["url"],
                "telegram" => &["bottoken", "chatid"],
                "slack" => &["url"],
                other => panic!("{}: unexpected type {other}", r.uid),
            };
            for key in required {
                let value = r.settings.get(*key).and_then(|v| v.as_str());
                assert!(value.is_some_and(|v| !v.is_empty()), "{}: {key}", r.uid);
            }
            assert!(!r.disable_resolve_message, "{}: say when it is over", r.uid);
        }
        assert!(!point.receivers.is_empty(), "{}", point.name);
        points.insert(point.name, point.receivers);
    }
    points
}

/// The effective policy for `labels`: Grafana's routing (first matching child, deepest
/// match), with group_by and timings inherited from the parents.
fn route(policy: &Policy, labels: &Labels) -> Policy {
    let matches = |p: &Policy| {
        p.object_matchers.iter().all(|[name, op, value]| {
            let have = labels.get(name).map(String::as_str).unwrap_or("");
            let full = regex::Regex::new(&format!("^(?:{value})$")).unwrap();
            match op.as_str() {
                "=" => have == value,
                "!=" => have != value,
                "=~" => full.is_match(have),
                "!~" => !full.is_match(have),
                other => panic!("matcher operator {other}"),
            }
        })
    };
    for child in &policy.routes {
        assert!(
            !child.object_matchers.is_empty(),
            "a route without matchers"
        );
        if matches(child) {
            let mut found = route(child, labels);
            let inherit = |mine: &mut Option<String>, parent: &Option<String>| {
                if mine.is_none() {
                    mine.clone_from(parent);
                }
            };
            if found.receiver.is_none() {
                found.receiver.clone_from(&policy.receiver);
            }
            if found.group_by.is_none() {
                found.group_by.clone_from(&policy.group_by);
            }
            inherit(&mut found.group_wait, &policy.group_wait);
            inherit(&mut found.group_interval, &policy.group_interval);
            inherit(&mut found.repeat_interval, &policy.repeat_interval);
            return found;
        }
    }
    policy.clone()
}

#[test]
fn contact_points_and_policy_page_only_on_critical() {
    let text = provisioning("alerting/jailsink-contact-points.yaml");
    let points = contact_points(&text);
    // The commented Telegram and Slack receivers are valid once uncommented.
    let all = contact_points(&uncommented(&text));
    let page: BTreeSet<&str> = all["jailsink-page"]
        .iter()
        .map(|r| r.kind.as_str())
        .collect();
    assert_eq!(
        page,
        BTreeSet::from(["email", "webhook", "telegram", "slack"])
    );
    let hook = all["jailsink-page"]
        .iter()
        .find(|r| r.kind == "webhook")
        .unwrap();
    assert!(hook.settings.contains_key("authorization_credentials"));

    let path = "alerting/jailsink-policies.yaml";
    let policies: PoliciesFile = parse(path, &provisioning(path));
    assert_eq!(policies.api_version, 1);
    let [root] = &policies.policies[..] else {
        panic!("one policy tree")
    };
    assert_eq!(root.org_id, Some(1));
    assert!(
        root.object_matchers.is_empty(),
        "the root policy matches everything"
    );
    fn walk(p: &Policy, points: &BTreeMap<String, Vec<Receiver>>) {
        if let Some(receiver) = &p.receiver {
            assert!(points.contains_key(receiver), "no contact point {receiver}");
        }
        for d in [&p.group_wait, &p.group_interval, &p.repeat_interval]
            .into_iter()
            .flatten()
        {
            assert!(millis(d).is_some(), "duration {d}");
        }
        assert_ne!(p.continue_, Some(true), "one notification per alert");
        p.routes.iter().for_each(|r| walk(r, points));
    }
    walk(root, &points);
    assert!(root.receiver.is_some(), "the root policy needs a receiver");

    let rules = rules_file();
    let mut severities = BTreeSet::new();
    for group in &rules.groups {
        for rule in &group.rules {
            // Grafana adds the rule's name and folder to its labels.
            let mut labels = rule.labels.clone();
            labels.insert("alertname".into(), rule.title.clone());
            labels.insert("grafana_folder".into(), group.folder.clone());
            labels.insert("jail".into(), "sshd".into());
            let policy = route(root, &labels);
            let receiver = policy.receiver.unwrap();
            let kinds: BTreeSet<&str> = points[&receiver].iter().map(|r| r.kind.as_str()).collect();
            let critical = rule.labels["severity"] == "critical";
            severities.insert(rule.labels["severity"].clone());
            assert!(kinds.contains("email"), "{}: {receiver}", rule.title);
            assert_eq!(
                kinds.contains("webhook"),
                critical,
                "{}: {receiver}",
                rule.title
            );
            let group_by = policy.group_by.unwrap_or_default();
            for key in ["alertname", "jail"] {
                assert!(
                    group_by.iter().any(|g| g == key),
                    "{}: by {key}",
                    rule.title
                );
            }
            // Sparingly: a firing group is repeated after hours, not minutes.
            let repeat = millis(&policy.repeat_interval.unwrap()).unwrap();
            let interval = millis(&policy.group_interval.unwrap()).unwrap();
            assert!(
                repeat >= 4 * 3_600_000 && repeat > interval,
                "{}",
                rule.title
            );
        }
    }
    assert_eq!(
        severities,
        BTreeSet::from(["critical".into(), "warning".into()])
    );
}
