package stack

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time zones are validated the same way on every machine
)

// ConfigNamespace is the project's config namespace (the `name` in Pulumi.yaml).
const ConfigNamespace = "melody-flow"

// ConfigKeys lists every key of the project's namespace that the program reads. Pulumi.yaml
// declares the same keys with their defaults; a test keeps the two in step.
var ConfigKeys = []string{
	"domain", "apiSubdomain", "wwwAlias", "staticDir", "errorPage", "priceClass",
	"instanceType", "amiId", "rootVolumeGiB",
	"spotMaxPrice", "spotInterruptionBehavior", "spotValidUntil",
	"sshIngressCidrs", "sshAllowWorld",
	"acmeEmail", "acmeStaging",
	"apiImage", "apiGitUrl", "apiGitRef", "apiHealthPath", "modelsDir",
	"alertEmail", "budgetMonthlyUsd", "alarmsEnabled",
	"idleStopEnabled", "idleStopMinutes", "idleStopCpuPercent",
	"scheduleStopCron", "scheduleStartCron", "scheduleTimezone",
}

// Config is the validated configuration of one stack.
type Config struct {
	Domain       string
	APISubdomain string
	WWWAlias     bool
	StaticDir    string
	ErrorPage    string // "spa" or "404"
	PriceClass   string

	InstanceType  string
	AMIID         string // empty: latest DLAMI from SSM at creation time
	RootVolumeGiB int

	SpotMaxPrice             string // empty: capped at the on-demand price
	SpotInterruptionBehavior string
	SpotValidUntil           string

	SSHIngressCIDRs []string
	SSHAllowWorld   bool

	ACMEEmail   string
	ACMEStaging bool

	APIImage      string
	APIGitURL     string
	APIGitRef     string
	APIHealthPath string
	ModelsDir     string

	AlertEmail         string // acmeEmail when not set
	BudgetMonthlyUSD   float64
	AlarmsEnabled      bool
	IdleStopEnabled    bool
	IdleStopMinutes    int
	IdleStopCPUPercent float64
	ScheduleStopCron   string
	ScheduleStartCron  string
	ScheduleTimezone   string
}

// APIDomain is the host name of the API, for example api.melody-flow.click.
func (c Config) APIDomain() string { return c.APISubdomain + "." + c.Domain }

// SiteDomains are the names the site answers to: the apex, then www when enabled.
func (c Config) SiteDomains() []string {
	if c.WWWAlias {
		return []string{c.Domain, "www." + c.Domain}
	}
	return []string{c.Domain}
}

// SSHOpenToWorld reports whether SSH is allowed from every address.
func (c Config) SSHOpenToWorld() bool {
	for _, cidr := range c.SSHIngressCIDRs {
		if p, err := netip.ParsePrefix(cidr); err == nil && p.Bits() == 0 {
			return true
		}
	}
	return false
}

// ParseConfig validates the raw values of the project namespace (keys without the
// "melody-flow:" prefix, values as Pulumi passes them: strings, JSON for arrays). It reports
// every bad value at once, each error naming its key. now is the deployment time, used to
// refuse a spot request end date that has already passed.
func ParseConfig(raw map[string]string, now time.Time) (Config, error) {
	p := parser{raw: raw}
	c := Config{
		Domain:       p.hostname("domain"),
		APISubdomain: p.label("apiSubdomain"),
		WWWAlias:     p.boolean("wwwAlias"),
		StaticDir:    p.nonEmpty("staticDir"),
		ErrorPage:    p.oneOf("errorPage", "spa", "404"),
		PriceClass:   p.oneOf("priceClass", "PriceClass_100", "PriceClass_200", "PriceClass_All"),

		InstanceType:  p.gpuInstanceType("instanceType"),
		AMIID:         p.optionalMatch("amiId", amiPattern, `an AMI ID such as "ami-0123456789abcdef0"`),
		RootVolumeGiB: p.intRange("rootVolumeGiB", minRootVolumeGiB, 16384),

		SpotMaxPrice:             p.optionalPrice("spotMaxPrice"),
		SpotInterruptionBehavior: p.oneOf("spotInterruptionBehavior", "stop", "hibernate"),
		SpotValidUntil:           p.futureTime("spotValidUntil", now),

		SSHIngressCIDRs: p.cidrs("sshIngressCidrs"),
		SSHAllowWorld:   p.boolean("sshAllowWorld"),

		ACMEEmail:   p.email("acmeEmail"),
		ACMEStaging: p.boolean("acmeStaging"),

		APIImage:      p.optionalMatch("apiImage", imagePattern, `an image reference such as "ghcr.io/org/api:1.2.3"`),
		APIGitURL:     p.optionalMatch("apiGitUrl", gitURLPattern, `an https:// or git@ repository URL`),
		APIGitRef:     p.optionalMatch("apiGitRef", gitRefPattern, `a branch, tag or commit, optionally followed by ":subdir"`),
		APIHealthPath: p.match("apiHealthPath", healthPathPattern, `an absolute URL path such as "/docs"`),
		ModelsDir:     p.optional("modelsDir"),

		AlertEmail:         p.optionalEmail("alertEmail"),
		BudgetMonthlyUSD:   p.number("budgetMonthlyUsd", 0, 1e6),
		AlarmsEnabled:      p.boolean("alarmsEnabled"),
		IdleStopEnabled:    p.boolean("idleStopEnabled"),
		IdleStopMinutes:    p.intRange("idleStopMinutes", 5, 1440),
		IdleStopCPUPercent: p.number("idleStopCpuPercent", 0.1, 99),
		ScheduleStopCron:   p.cron("scheduleStopCron"),
		ScheduleStartCron:  p.cron("scheduleStartCron"),
		ScheduleTimezone:   p.timezone("scheduleTimezone"),
	}
	if c.AlertEmail == "" {
		c.AlertEmail = c.ACMEEmail
	}
	if c.IdleStopMinutes%5 != 0 {
		p.fail("idleStopMinutes", "%d is not a multiple of 5 (EC2's basic metrics come every 5 minutes)", c.IdleStopMinutes)
	}
	if c.SSHOpenToWorld() && !c.SSHAllowWorld {
		p.fail("sshIngressCidrs", "%s opens SSH to every address; set %s:sshAllowWorld to true to allow that explicitly",
			strings.Join(c.SSHIngressCIDRs, ", "), ConfigNamespace)
	}
	switch {
	case c.APIImage == "" && c.APIGitURL == "":
		p.fail("apiImage", "neither apiImage nor apiGitUrl is set: the host needs an image to run or a repository to build")
	case c.APIImage != "" && c.APIGitURL != "":
		p.fail("apiImage", "both apiImage and apiGitUrl are set: choose one")
	case c.APIGitURL != "" && c.APIGitRef == "":
		p.fail("apiGitRef", "must name the branch, tag or commit of apiGitUrl to build")
	}
	if len(p.errs) > 0 {
		return Config{}, errors.Join(p.errs...)
	}
	return c, nil
}

// The DLAMI's root snapshot is about 75 GiB: a smaller root volume cannot be created from it.
const minRootVolumeGiB = 75

var (
	hostnamePattern   = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
	labelPattern      = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	amiPattern        = regexp.MustCompile(`^ami-([0-9a-f]{8}|[0-9a-f]{17})$`)
	imagePattern      = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?(@sha256:[0-9a-f]{64})?$`)
	gitURLPattern     = regexp.MustCompile(`^(https://[^\s#]+|git@[^\s#]+:[^\s#]+)$`)
	gitRefPattern     = regexp.MustCompile(`^[A-Za-z0-9._/-]+(:[A-Za-z0-9._/-]+)?$`)
	healthPathPattern = regexp.MustCompile(`^/[A-Za-z0-9._~/-]*$`)
	pricePattern      = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)
	// x86_64 NVIDIA GPU families: the DLAMI is x86_64 with the NVIDIA driver (g4ad is AMD, g5g is Arm).
	gpuFamilies = map[string]bool{
		"g4dn": true, "g5": true, "g6": true, "g6e": true, "gr6": true,
		"p3": true, "p3dn": true, "p4d": true, "p4de": true, "p5": true, "p5e": true, "p5en": true,
	}
)

type parser struct {
	raw  map[string]string
	errs []error
}

func (p *parser) fail(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s:%s: %s", ConfigNamespace, key, fmt.Sprintf(format, args...)))
}

// value returns the raw value; a missing key is an error, since Pulumi fills in the defaults
// declared in Pulumi.yaml and so every key is present in a real run.
func (p *parser) value(key string) (string, bool) {
	v, ok := p.raw[key]
	if !ok {
		p.fail(key, "is not set (declare it in Pulumi.yaml or set it with `pulumi config set %s:%s`)", ConfigNamespace, key)
	}
	return strings.TrimSpace(v), ok
}

func (p *parser) optional(key string) string {
	v, _ := p.value(key)
	return v
}

func (p *parser) nonEmpty(key string) string {
	v, ok := p.value(key)
	if ok && v == "" {
		p.fail(key, "must not be empty")
	}
	return v
}

func (p *parser) match(key string, re *regexp.Regexp, want string) string {
	v, ok := p.value(key)
	if ok && !re.MatchString(v) {
		p.fail(key, "%q is not %s", v, want)
	}
	return v
}

func (p *parser) optionalMatch(key string, re *regexp.Regexp, want string) string {
	v, ok := p.value(key)
	if ok && v != "" && !re.MatchString(v) {
		p.fail(key, "%q is not %s", v, want)
	}
	return v
}

func (p *parser) hostname(key string) string {
	v, ok := p.value(key)
	if ok && (len(v) > 253 || !hostnamePattern.MatchString(v)) {
		p.fail(key, "%q is not a lower-case DNS name such as \"melody-flow.click\"", v)
	}
	return v
}

func (p *parser) label(key string) string {
	v, ok := p.value(key)
	if ok && !labelPattern.MatchString(v) {
		p.fail(key, "%q is not a single lower-case DNS label such as \"api\"", v)
	}
	return v
}

func (p *parser) boolean(key string) bool {
	v, ok := p.value(key)
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(key, "%q is not true or false", v)
	}
	return b
}

func (p *parser) oneOf(key string, allowed ...string) string {
	v, ok := p.value(key)
	if !ok {
		return ""
	}
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	p.fail(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
	return v
}

func (p *parser) intRange(key string, lo, hi int) int {
	v, ok := p.value(key)
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		p.fail(key, "%q is not a whole number", v)
	case n < lo || n > hi:
		p.fail(key, "%d is out of range: it must be between %d and %d", n, lo, hi)
	}
	return n
}

func (p *parser) gpuInstanceType(key string) string {
	v, ok := p.value(key)
	if !ok {
		return ""
	}
	family, size, found := strings.Cut(v, ".")
	if !found || size == "" || !gpuFamilies[family] {
		p.fail(key, "%q is not an x86_64 NVIDIA GPU instance type such as \"g4dn.xlarge\"", v)
	}
	return v
}

func (p *parser) optionalPrice(key string) string {
	v, ok := p.value(key)
	if !ok || v == "" {
		return v
	}
	f, err := strconv.ParseFloat(v, 64)
	if !pricePattern.MatchString(v) || err != nil || f <= 0 {
		p.fail(key, "%q is not a positive price in USD per hour such as \"0.30\"", v)
	}
	return v
}

func (p *parser) futureTime(key string, now time.Time) string {
	v, ok := p.value(key)
	if !ok {
		return ""
	}
	t, err := time.Parse(time.RFC3339, v)
	switch {
	case err != nil:
		p.fail(key, "%q is not an RFC 3339 time such as \"2030-12-31T23:59:59Z\"", v)
	case !t.After(now):
		p.fail(key, "%s has already passed: the spot request would end at once", v)
	}
	return v
}

func (p *parser) email(key string) string {
	v, ok := p.value(key)
	if !ok {
		return ""
	}
	if v == "" {
		p.fail(key, "must be set: Let's Encrypt registers the account under this address")
		return v
	}
	addr, err := mail.ParseAddress(v)
	if err != nil || addr.Address != v || !strings.Contains(v[strings.LastIndex(v, "@")+1:], ".") {
		p.fail(key, "%q is not an e-mail address such as \"ops@melody-flow.click\"", v)
	}
	return v
}

func (p *parser) optionalEmail(key string) string {
	v, ok := p.value(key)
	if !ok || v == "" {
		return ""
	}
	return p.email(key)
}

func (p *parser) number(key string, lo, hi float64) float64 {
	v, ok := p.value(key)
	if !ok {
		return 0
	}
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil:
		p.fail(key, "%q is not a number", v)
	case f < lo || f > hi:
		p.fail(key, "%s is out of range: it must be between %g and %g", v, lo, hi)
	}
	return f
}

// cronField is one field of an EventBridge Scheduler cron expression.
var cronField = regexp.MustCompile(`^[0-9A-Za-z*?,/#-]+$`)

// cron accepts "" or EventBridge Scheduler's six-field "cron(min hour day-of-month month
// day-of-week year)", in which exactly one of the two day fields is "?".
func (p *parser) cron(key string) string {
	v, ok := p.value(key)
	if !ok || v == "" {
		return v
	}
	const want = `an EventBridge cron expression such as "cron(0 1 * * ? *)" (minutes hours day-of-month month day-of-week year)`
	inner, found := strings.CutPrefix(v, "cron(")
	inner, closed := strings.CutSuffix(inner, ")")
	fields := strings.Fields(inner)
	if !found || !closed || len(fields) != 6 {
		p.fail(key, "%q is not %s", v, want)
		return v
	}
	for _, f := range fields {
		if !cronField.MatchString(f) {
			p.fail(key, "%q has the field %q, which is not a cron field", v, f)
			return v
		}
	}
	if (fields[2] == "?") == (fields[4] == "?") {
		p.fail(key, "%q: exactly one of day-of-month and day-of-week must be \"?\"", v)
	}
	return v
}

func (p *parser) timezone(key string) string {
	v, ok := p.value(key)
	if !ok {
		return ""
	}
	if _, err := time.LoadLocation(v); err != nil || v == "" || v == "Local" {
		p.fail(key, "%q is not an IANA time zone such as \"Asia/Tokyo\"", v)
	}
	return v
}

func (p *parser) cidrs(key string) []string {
	v, ok := p.value(key)
	if !ok {
		return nil
	}
	var list []string
	if v != "" {
		if err := json.Unmarshal([]byte(v), &list); err != nil {
			p.fail(key, "%q is not a list of CIDRs such as [\"203.0.113.0/24\"]", v)
			return nil
		}
	}
	seen := map[string]bool{}
	for _, cidr := range list {
		prefix, err := netip.ParsePrefix(cidr)
		switch {
		case err != nil:
			p.fail(key, "%q is not a CIDR such as \"203.0.113.0/24\" or \"2001:db8::/32\"", cidr)
		case prefix.Masked() != prefix:
			p.fail(key, "%q has host bits set; did you mean %q?", cidr, prefix.Masked().String())
		case seen[cidr]:
			p.fail(key, "%q is listed twice", cidr)
		}
		seen[cidr] = true
	}
	return list
}
