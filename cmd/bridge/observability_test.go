package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// The dashboard and alert rules that these tests hold to the bridge's
// /metrics, relative to this package.
const (
	dashboardFile  = "../../deploy/grafana/grpcbridge-dashboard.json"
	alertsFile     = "../../deploy/prometheus/alerts.yaml"
	alertTestsFile = "../../deploy/prometheus/alerts_test.yaml"
)

// targetLabels are the labels Prometheus adds to every series of a target
// (Kubernetes service discovery's namespace and pod, and job and instance);
// they are in no exposition.
var targetLabels = []string{"namespace", "pod", "job", "instance"}

// family is what a query may use of a metric family: its type and labels.
type family struct {
	typ    dto.MetricType
	labels map[string]bool
}

func addFamily(known map[string]family, mf *dto.MetricFamily) {
	f, ok := known[mf.GetName()]
	if !ok {
		f = family{typ: mf.GetType(), labels: make(map[string]bool)}
		known[mf.GetName()] = f
	}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			f.labels[lp.GetName()] = true
		}
	}
}

// scrapeFamilies parses the text exposition at url.
func scrapeFamilies(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d", url, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return families
}

// gauge returns the value of the unlabelled gauge name, or fails.
func gauge(t *testing.T, families map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	mf, ok := families[name]
	if !ok || len(mf.GetMetric()) != 1 || mf.GetType() != dto.MetricType_GAUGE {
		t.Fatalf("%s: %v, want one gauge", name, mf)
	}
	return mf.GetMetric()[0].GetGauge().GetValue()
}

// echoOverWebSocket sends two messages to demo.v1.EchoService/Echo,
// half-closes, and reads until the bridge closes.
func echoOverWebSocket(t *testing.T, base string) {
	t.Helper()
	ws, _, err := (&websocket.Dialer{Subprotocols: []string{"grpc-ws.v1"}}).DialContext(t.Context(),
		"ws"+strings.TrimPrefix(base, "http")+"/demo.v1.EchoService/Echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, text := range []string{"a", "bb"} {
		b, _ := proto.Marshal(&demov1.EchoRequest{Text: text})
		if err := ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"end":true}`)); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return // the close frame after the status
		}
	}
}

// knownFamilies runs the demo bridge, drives an SSE stream, a WebSocket and
// a native gRPC call through it, and returns the families of its admin
// /metrics. The bridge's counters that this traffic leaves without a series
// (panics, slow-client drops) come from a promMetrics of the same namespace
// whose every vector has a child, so that the check covers every family
// and label the bridge can expose.
func knownFamilies(t *testing.T) map[string]family {
	t.Helper()
	cfg, err := parseFlags([]string{"-demo", "-h2c", "-admin-addr", "127.0.0.1:0", "-max-streams", "100"})
	if err != nil {
		t.Fatal(err)
	}
	b := startTestBridge(t, cfg, slog.New(slog.DiscardHandler))
	if code, body := get(t, b.url+"/demo.v1.TickerService/Watch?symbol=A&limit=2&interval_ms=1"); code != http.StatusOK || !strings.Contains(body, "event: end") {
		t.Fatalf("SSE: %d %q", code, body)
	}
	echoOverWebSocket(t, b.url)
	if n, err := watchTicks(t, dialInsecure(t, strings.TrimPrefix(b.url, "http://")), 2); err != nil || n != 2 {
		t.Fatalf("native gRPC: %d ticks, %v", n, err)
	}
	ns := cfg.MetricsNamespace
	var scraped map[string]*dto.MetricFamily
	// The WebSocket's end is counted after its close handshake.
	waitFor(t, func() bool {
		scraped = scrapeFamilies(t, b.adminURL+"/metrics")
		return len(scraped[ns+"_websocket_close_codes_total"].GetMetric()) > 0
	})

	known := make(map[string]family)
	for _, mf := range scraped {
		addFamily(known, mf)
	}
	// The scrape has the traffic's series, on every transport, and the
	// standard collectors.
	transports := make(map[string]bool)
	for _, m := range scraped[ns+"_streams_finished_total"].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "transport" {
				transports[lp.GetValue()] = true
			}
		}
	}
	if !transports["sse"] || !transports["websocket"] || !transports["grpc"] {
		t.Fatalf("streams_finished_total has transports %v, want sse, websocket and grpc", transports)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "go_gc_duration_seconds", ns + "_ready", ns + "_max_streams"} {
		if _, ok := scraped[name]; !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}

	reg := prometheus.NewRegistry()
	m := newPromMetrics(reg, ns)
	obs := m.StreamStarted("demo.v1.EchoService/Echo", "websocket", true)
	obs.MessageSent(1)
	obs.MessageReceived(1)
	obs.StreamEnded(codes.Unavailable, 4014, true)
	m.StreamPanicked("demo.v1.EchoService/Echo", "websocket")
	gathered, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range gathered {
		addFamily(known, mf)
	}
	// up is Prometheus' own series for each target.
	known["up"] = family{typ: dto.MetricType_GAUGE, labels: map[string]bool{}}
	return known
}

// A query's parts, for the check below.
var (
	// A Grafana variable: $name, ${name}, ${name:format}.
	grafanaVar = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*`)
	// A vector selector with label matchers; its metric name may be empty.
	selectorRE = regexp.MustCompile(`([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$`)
	stringRE   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'` + "|`[^`]*`")
	rangeRE    = regexp.MustCompile(`\[[^\]]*\]`)
	groupingRE = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	// An identifier, with the character before it, which must not be part
	// of a number (1e3) or a name.
	identRE = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)`)
	// A variable's label_values(selector, label) query.
	labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)
)

// promqlWords are PromQL's functions, aggregations and keywords: names in
// an expression that are not metrics.
var promqlWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`
		sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
		abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week day_of_year
		days_in_month delta deriv exp floor histogram_avg histogram_count histogram_fraction histogram_quantile
		histogram_stddev histogram_stdvar histogram_sum holt_winters double_exponential_smoothing hour idelta
		increase irate label_join label_replace ln log2 log10 minute month predict_linear rate resets round
		scalar sgn sort sort_desc sort_by_label sort_by_label_desc sqrt time timestamp vector year
		avg_over_time min_over_time max_over_time sum_over_time count_over_time quantile_over_time
		stddev_over_time stdvar_over_time last_over_time present_over_time mad_over_time
		acos acosh asin asinh atan atanh cos cosh sin sinh tan tanh deg rad pi
		and or unless atan2 bool offset by without on ignoring group_left group_right inf nan start end`) {
		promqlWords[w] = true
	}
}

// selector is one metric a query names, with the label matchers it uses.
type selector struct {
	metric   string
	matchers [][3]string // label, operator, value
}

// selectors returns the metrics expr names. It is no PromQL parser (that
// is github.com/prometheus/prometheus, too heavy a dependency for this),
// but it is strict where it matters: every identifier that is not a
// function, an aggregation or a keyword is taken for a metric name, so a
// misspelt metric cannot hide.
func selectors(expr string) ([]selector, error) {
	var out []selector
	// Matchers first, while their values are still there.
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		sel := selector{metric: m[1]}
		if sel.metric == "" {
			return nil, fmt.Errorf("a selector without a metric name: %s", m[0])
		}
		for _, part := range splitMatchers(m[2]) {
			mm := matcherRE.FindStringSubmatch(part)
			if mm == nil {
				return nil, fmt.Errorf("cannot read label matcher %q", part)
			}
			sel.matchers = append(sel.matchers, [3]string{mm[1], mm[2], mm[3]})
		}
		out = append(out, sel)
	}
	rest := selectorRE.ReplaceAllString(expr, "$1")
	rest = stringRE.ReplaceAllString(rest, `""`)
	rest = rangeRE.ReplaceAllString(rest, "")
	rest = groupingRE.ReplaceAllString(rest, "")
	rest = grafanaVar.ReplaceAllString(rest, "")
	for _, loc := range identRE.FindAllStringSubmatchIndex(rest, -1) {
		name := rest[loc[2]:loc[3]]
		if strings.HasPrefix(strings.TrimLeft(rest[loc[3]:], " \t\n"), "(") {
			if !promqlWords[name] {
				return nil, fmt.Errorf("unknown function %s", name)
			}
			continue
		}
		if promqlWords[name] {
			continue
		}
		if !slices.ContainsFunc(out, func(s selector) bool { return s.metric == name }) {
			out = append(out, selector{metric: name})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no metric in %q", expr)
	}
	return out, nil
}

// splitMatchers splits the inside of {...} at the commas outside quotes.
func splitMatchers(s string) []string {
	var parts []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quoted:
			i++
		case s[i] == '"':
			quoted = !quoted
		case s[i] == ',' && !quoted:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	if strings.TrimSpace(s[start:]) != "" {
		parts = append(parts, s[start:])
	}
	return parts
}

// lookup finds the family of a series name: itself, or the histogram or
// summary whose _bucket, _sum or _count it is.
func lookup(known map[string]family, name string) (family, bool) {
	if f, ok := known[name]; ok {
		return f, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		f, ok := known[base]
		if ok && (f.typ == dto.MetricType_HISTOGRAM || (f.typ == dto.MetricType_SUMMARY && suffix != "_bucket")) {
			f.labels = maps.Clone(f.labels)
			f.labels["le"] = true
			return f, true
		}
	}
	return family{}, false
}

// labelValues are the values the bridge gives its labels (docs/metrics.md,
// "Label values"), by family suffix and label; a query's literal matcher
// must use one of them, so that "UNAVAILABLE" for "Unavailable" cannot
// match nothing forever.
func labelValues() map[string]map[string][]string {
	var grpcCodes []string
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		grpcCodes = append(grpcCodes, c.String())
	}
	closeCodes := []string{"1000", "1001", "1002", "1007", "1008", "1009", "1011"}
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		closeCodes = append(closeCodes, strconv.Itoa(4000+int(c)))
	}
	transports := []string{"sse", "websocket", "grpc", "unary"}
	return map[string]map[string][]string{
		"streams_finished_total":      {"code": grpcCodes},
		"websocket_close_codes_total": {"code": closeCodes},
		"":                            {"transport": transports, "direction": {"to_client", "from_client"}},
	}
}

// checkQuery reports what of expr does not exist in known.
func checkQuery(t testing.TB, where, expr string, known map[string]family) {
	t.Helper()
	sels, err := selectors(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	values := labelValues()
	for _, sel := range sels {
		f, ok := lookup(known, sel.metric)
		if !ok {
			t.Errorf("%s: metric %s is not in /metrics", where, sel.metric)
			continue
		}
		for _, m := range sel.matchers {
			label, op, value := m[0], m[1], m[2]
			if !f.labels[label] && !slices.Contains(targetLabels, label) {
				t.Errorf("%s: %s has no label %s", where, sel.metric, label)
				continue
			}
			allowed := values[""][label]
			for suffix, byLabel := range values {
				if suffix != "" && strings.HasSuffix(sel.metric, "_"+suffix) && byLabel[label] != nil {
					allowed = byLabel[label]
				}
			}
			if allowed == nil || strings.Contains(value, "$") {
				continue
			}
			alternatives := []string{value}
			if op == "=~" || op == "!~" {
				if !regexp.MustCompile(`^[A-Za-z0-9_|]+$`).MatchString(value) {
					continue // a real regular expression: not checked
				}
				alternatives = strings.Split(value, "|")
			}
			for _, v := range alternatives {
				if !slices.Contains(allowed, v) {
					t.Errorf("%s: %s{%s%s%q}: the bridge never sets %s=%q (it uses %v)", where, sel.metric, label, op, value, label, v, allowed)
				}
			}
		}
	}
}

// dashboardPanel is the part of a Grafana panel these tests read.
type dashboardPanel struct {
	ID         int              `json:"id"`
	Type       string           `json:"type"`
	Title      string           `json:"title"`
	GridPos    map[string]int   `json:"gridPos"`
	Datasource map[string]any   `json:"datasource"`
	Targets    []map[string]any `json:"targets"`
	Panels     []dashboardPanel `json:"panels"` // a collapsed row's
}

type dashboard struct {
	UID           string           `json:"uid"`
	Title         string           `json:"title"`
	SchemaVersion int              `json:"schemaVersion"`
	Panels        []dashboardPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Type       string         `json:"type"`
			Name       string         `json:"name"`
			Query      any            `json:"query"`
			Datasource map[string]any `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

// readDashboard decodes the dashboard and checks its structure: a
// Prometheus datasource variable that every panel and query uses, unique
// panel ids, and queries in every panel but rows.
func readDashboard(t *testing.T) (d dashboard, queries map[string]string) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 39 {
		t.Errorf("%s: uid %q, title %q, schemaVersion %d (want 39 or later, Grafana 11)", dashboardFile, d.UID, d.Title, d.SchemaVersion)
	}
	const ds = "${datasource}"
	queries = make(map[string]string)
	hasDatasource := false
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			hasDatasource = v.Name == "datasource" && v.Query == "prometheus"
		case "query":
			q, _ := v.Query.(string)
			queries["variable "+v.Name] = q
			if v.Datasource["uid"] != ds {
				t.Errorf("variable %s: datasource %v, want %s", v.Name, v.Datasource, ds)
			}
		}
	}
	if !hasDatasource {
		t.Errorf("%s: no datasource variable named datasource of type prometheus", dashboardFile)
	}
	ids := make(map[int]bool)
	var walk func([]dashboardPanel)
	walk = func(panels []dashboardPanel) {
		for _, p := range panels {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if p.ID == 0 || ids[p.ID] || p.Title == "" || p.GridPos["w"] == 0 || p.GridPos["h"] == 0 {
				t.Errorf("%s: want a unique id, a title and a gridPos (%v)", where, p.GridPos)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 || p.Datasource["uid"] != ds {
				t.Errorf("%s: %d targets, datasource %v; want targets on %s", where, len(p.Targets), p.Datasource, ds)
			}
			refIDs := make(map[any]bool)
			for i, tg := range p.Targets {
				expr, _ := tg["expr"].(string)
				ds2, _ := tg["datasource"].(map[string]any)
				if expr == "" || tg["refId"] == nil || refIDs[tg["refId"]] || ds2["uid"] != ds {
					t.Errorf("%s target %d: want an expr, a unique refId and datasource %s: %v", where, i, ds, tg)
				}
				refIDs[tg["refId"]] = true
				queries[fmt.Sprintf("%s target %v", where, tg["refId"])] = expr
			}
		}
	}
	walk(d.Panels)
	return d, queries
}

// alertRule is a rule of a Prometheus rule file; the decoder refuses
// other keys.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleFile struct {
	Groups []struct {
		Name     string      `yaml:"name"`
		Interval string      `yaml:"interval"`
		Rules    []alertRule `yaml:"rules"`
	} `yaml:"groups"`
}

// readAlerts decodes the rule file strictly and checks each alert's
// fields, as promtool check rules would, less the PromQL.
func readAlerts(t *testing.T) (queries map[string]string) {
	t.Helper()
	f, err := os.Open(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	var rf ruleFile
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	if len(rf.Groups) == 0 {
		t.Fatalf("%s: no groups", alertsFile)
	}
	queries = make(map[string]string)
	groups := make(map[string]bool)
	for _, g := range rf.Groups {
		if g.Name == "" || groups[g.Name] || len(g.Rules) == 0 {
			t.Errorf("group %q: want a unique name and rules", g.Name)
		}
		groups[g.Name] = true
		for i, r := range g.Rules {
			where := fmt.Sprintf("group %s rule %d %s", g.Name, i, r.Alert)
			if r.Alert == "" || r.Record != "" || !regexp.MustCompile(`^Grpcbridge[A-Z][A-Za-z]+$`).MatchString(r.Alert) {
				t.Errorf("%s: want an alert named GrpcbridgeSomething, no record", where)
			}
			if _, dup := queries[r.Alert]; dup {
				t.Errorf("%s: a second alert of that name", where)
			}
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: no expr", where)
			}
			if _, err := model.ParseDuration(r.For); err != nil {
				t.Errorf("%s: for %q: %v", where, r.For, err)
			}
			if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" && sev != "info" {
				t.Errorf("%s: severity %q, want critical, warning or info", where, sev)
			}
			for _, key := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[key]) == "" {
					t.Errorf("%s: no %s annotation", where, key)
				}
			}
			queries[r.Alert] = r.Expr
		}
	}
	return queries
}

// TestDashboardAndAlertsUseExposedMetrics holds deploy/grafana and
// deploy/prometheus to the metrics a running bridge exposes: every metric
// their queries name is in /metrics (or is a series of a family there), and
// every label and literal label value they match on is one the bridge
// sets.
func TestDashboardAndAlertsUseExposedMetrics(t *testing.T) {
	t.Parallel()
	_, dashQueries := readDashboard(t)
	alertQueries := readAlerts(t)
	if t.Failed() {
		return
	}
	known := knownFamilies(t)
	for where, q := range dashQueries {
		if strings.HasPrefix(where, "variable ") {
			m := labelValuesRE.FindStringSubmatch(q)
			if m == nil {
				t.Errorf("dashboard %s: %q, want label_values(selector, label)", where, q)
				continue
			}
			checkQuery(t, "dashboard "+where, m[1], known)
			sels, _ := selectors(m[1])
			if f, ok := lookup(known, sels[0].metric); ok && !f.labels[m[2]] && !slices.Contains(targetLabels, m[2]) {
				t.Errorf("dashboard %s: %s has no label %s", where, sels[0].metric, m[2])
			}
			continue
		}
		checkQuery(t, "dashboard "+where, q, known)
	}
	for name, q := range alertQueries {
		checkQuery(t, "alert "+name, q, known)
	}
	// The dashboard shows what the issue asks of it.
	all := strings.Join(slices.Collect(maps.Values(dashQueries)), "\n")
	for _, name := range []string{
		"grpcbridge_streams_active", "grpcbridge_streams_started_total", "grpcbridge_streams_finished_total",
		"grpcbridge_messages_total", "grpcbridge_slow_client_drops_total", "grpcbridge_websocket_close_codes_total",
		`transport="grpc"`, "grpcbridge_ready", "grpcbridge_draining", "grpcbridge_panics_total",
		"go_goroutines", "process_resident_memory_bytes", "go_gc_duration_seconds",
	} {
		if !strings.Contains(all, name) {
			t.Errorf("the dashboard has no query of %s", name)
		}
	}
}

// TestQueryCheckerCatchesMistakes shows that the check above is not
// vacuous: misspelt metrics, labels and values are reported.
func TestQueryCheckerCatchesMistakes(t *testing.T) {
	t.Parallel()
	known := map[string]family{
		"grpcbridge_streams_finished_total":  {typ: dto.MetricType_COUNTER, labels: map[string]bool{"method": true, "transport": true, "code": true}},
		"grpcbridge_stream_duration_seconds": {typ: dto.MetricType_HISTOGRAM, labels: map[string]bool{"method": true, "transport": true}},
		"go_gc_duration_seconds":             {typ: dto.MetricType_SUMMARY, labels: map[string]bool{}},
	}
	for _, tc := range []struct {
		expr string
		want string // "" for no error
	}{
		{`sum by (code) (rate(grpcbridge_streams_finished_total{code!~"OK|Canceled", namespace=~"$namespace"}[$__rate_interval]))`, ""},
		{`histogram_quantile(0.99, sum by (le) (rate(grpcbridge_stream_duration_seconds_bucket{transport="sse"}[5m])))`, ""},
		{`rate(go_gc_duration_seconds_sum[5m]) / rate(go_gc_duration_seconds_count[5m]) > 1e-3`, ""},
		{`sum(rate(grpcbridge_stream_finished_total[5m]))`, "metric grpcbridge_stream_finished_total is not in /metrics"},
		{`grpcbridge_streams_finished_total / on (instance) group_left grpcbridge_streams_startd_total`, "metric grpcbridge_streams_startd_total"},
		{`go_gc_duration_seconds_bucket`, "metric go_gc_duration_seconds_bucket"},
		{`rate(grpcbridge_streams_finished_total{codes="OK"}[5m])`, "has no label codes"},
		{`rate(grpcbridge_streams_finished_total{code=~"UNAVAILABLE|Internal"}[5m])`, `never sets code="UNAVAILABLE"`},
		{`rate(grpcbridge_streams_finished_total{transport="ws"}[5m])`, `never sets transport="ws"`},
		{`rates(grpcbridge_streams_finished_total[5m])`, "unknown function rates"},
		{`vector(1)`, "no metric"},
	} {
		rec := &recordingTB{TB: t}
		checkQuery(rec, "q", tc.expr, known)
		got := strings.Join(rec.errors, "; ")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: errors %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// recordingTB records Errorf calls instead of failing the test.
type recordingTB struct {
	testing.TB
	errors []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

// TestHealthGauges: grpcbridge_ready follows /readyz, grpcbridge_draining
// turns 1 on SIGTERM, and grpcbridge_max_streams is the limit, present
// only when there is one.
func TestHealthGauges(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-demo", "-admin-addr", "127.0.0.1:0", "-max-streams", "250", "-shutdown-delay", "2s", "-metrics-namespace", "edge"})
	if err != nil {
		t.Fatal(err)
	}
	b := startTestBridge(t, cfg, slog.New(slog.DiscardHandler))
	pollReady(t, b.adminURL+"/readyz", http.StatusOK)
	families := scrapeFamilies(t, b.adminURL+"/metrics")
	if ready, draining, limit := gauge(t, families, "edge_ready"), gauge(t, families, "edge_draining"), gauge(t, families, "edge_max_streams"); ready != 1 || draining != 0 || limit != 250 {
		t.Fatalf("ready %v, draining %v, max_streams %v; want 1, 0, 250", ready, draining, limit)
	}
	b.stop() // SIGTERM: the admin listener serves on through the shutdown delay
	pollReady(t, b.adminURL+"/readyz", http.StatusServiceUnavailable)
	families = scrapeFamilies(t, b.adminURL+"/metrics")
	if ready, draining := gauge(t, families, "edge_ready"), gauge(t, families, "edge_draining"); ready != 0 || draining != 1 {
		t.Fatalf("while draining: ready %v, draining %v; want 0, 1", ready, draining)
	}

	cfg, err = parseFlags([]string{"-demo", "-admin-addr", "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	b = startTestBridge(t, cfg, slog.New(slog.DiscardHandler))
	if _, ok := scrapeFamilies(t, b.adminURL+"/metrics")[cfg.MetricsNamespace+"_max_streams"]; ok {
		t.Fatal("max_streams without a limit: want no series, so that queries of streams against it find none")
	}
}

// TestMetricsDocCoversHealthGauges: the gauges outside promMetrics are
// documented too.
func TestMetricsDocCoversHealthGauges(t *testing.T) {
	t.Parallel()
	doc := readDoc(t, metricsDoc)
	reg := prometheus.NewRegistry()
	reg.MustRegister(healthCollectors(defaultConfig().MetricsNamespace, &readiness{}, 1)...)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != 3 {
		t.Fatalf("gathered %d families, want 3", len(families))
	}
	for _, mf := range families {
		if !strings.Contains(doc, "`"+mf.GetName()+"`") {
			t.Errorf("%s: metric `%s` is not documented", metricsDoc, mf.GetName())
		}
	}
}

// TestAlertRulesPromtool checks the rules and the dashboard's queries with
// Prometheus' own parser, where promtool is installed (Debian's prometheus
// package has it): promtool check rules parses every expression, and
// promtool test rules runs alerts_test.yaml, which says when each alert
// fires.
func TestAlertRulesPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not on PATH")
	}
	run := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	writeYAML := func(path string, v any) {
		t.Helper()
		b, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run("check", "rules", alertsFile)

	// The unit tests, against the rules less their annotations, which
	// promtool would compare too.
	dir := t.TempDir()
	var rules map[string]any
	if err := yaml.Unmarshal([]byte(readDoc(t, alertsFile)), &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			delete(r.(map[string]any), "annotations")
		}
	}
	writeYAML(filepath.Join(dir, filepath.Base(alertsFile)), rules)
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), []byte(readDoc(t, alertTestsFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	run("test", "rules", filepath.Join(dir, "alerts_test.yaml"))

	// The dashboard's queries, as recording rules, with Grafana's
	// variables given values.
	_, queries := readDashboard(t)
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$namespace", ".*", "$instance", ".*", "$method", ".*")
	var recording []map[string]string
	for _, where := range slices.Sorted(maps.Keys(queries)) {
		q := queries[where]
		if m := labelValuesRE.FindStringSubmatch(q); m != nil {
			q = m[1]
		}
		recording = append(recording, map[string]string{"record": fmt.Sprintf("dashboard:query%d", len(recording)), "expr": vars.Replace(q)})
	}
	dashRules := filepath.Join(dir, "dashboard_rules.yaml")
	writeYAML(dashRules, map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": recording}}})
	run("check", "rules", dashRules)
}
