package frontend

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestContentTypesAreExplicit(t *testing.T) {
	cases := map[string]string{
		"index.html":          "text/html; charset=utf-8",
		"app.js":              "text/javascript; charset=utf-8",
		"module.MJS":          "text/javascript; charset=utf-8",
		"style.css":           "text/css; charset=utf-8",
		"data.json":           "application/json",
		"app.js.map":          "application/json",
		"logo.svg":            "image/svg+xml",
		"a.png":               "image/png",
		"b.jpg":               "image/jpeg",
		"c.webp":              "image/webp",
		"favicon.ico":         "image/x-icon",
		"font.woff2":          "font/woff2",
		"engine.wasm":         "application/wasm",
		"robots.txt":          "text/plain; charset=utf-8",
		"melody.mid":          "audio/midi",
		"site.webmanifest":    "application/manifest+json",
		"LICENSE":             "application/octet-stream",
		"archive.unknownkind": "application/octet-stream",
	}
	for key, want := range cases {
		if got := ContentType(key); got != want {
			t.Errorf("ContentType(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestFingerprintsAndCacheControl(t *testing.T) {
	cases := map[string]string{
		"index.html":                  CacheRevalidate,
		"docs/page.htm":               CacheRevalidate,
		"config.js":                   CacheRevalidate,
		"assets/index-D1wrgTda.js":    CacheImmutable, // Vite
		"assets/app.3f2a9c1b.css":     CacheImmutable, // webpack-style hex
		"static/js/main.8e1c2d3f.js":  CacheImmutable,
		"assets/logo-a1b2c3d4e5.svg":  CacheImmutable,
		"main.js":                     CacheShort,
		"assets/component-library.js": CacheShort, // words are not hashes
		"assets/index-DiwrgTda.js":    CacheShort, // no digit: treated as a plain name, short cache only
		"lib/jquery-3.7.1.min.js":     CacheShort,
		"favicon.svg":                 CacheShort,
	}
	for key, want := range cases {
		if got := CacheControl(key); got != want {
			t.Errorf("CacheControl(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestScanStaticSkipsHiddenFilesAndTheGeneratedConfig(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"index.html", "assets/app-1a2b3c4d.js", ".env", ".git/HEAD", "assets/.DS_Store", "config.js"} {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files, shadowed, err := ScanStatic(dir)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, f := range files {
		keys = append(keys, f.Key)
	}
	if !reflect.DeepEqual(keys, []string{"assets/app-1a2b3c4d.js", "index.html"}) {
		t.Errorf("keys = %v", keys)
	}
	if !reflect.DeepEqual(shadowed, []string{"config.js"}) {
		t.Errorf("shadowed = %v", shadowed)
	}
	if files[0].CacheControl != CacheImmutable || files[1].ContentType != "text/html; charset=utf-8" {
		t.Errorf("files = %+v", files)
	}
	if _, _, err := ScanStatic(t.TempDir()); err == nil {
		t.Error("an empty site folder was accepted")
	}
}

func TestInvalidationPaths(t *testing.T) {
	files := []File{{Key: "index.html"}, {Key: "assets/app-1a2b3c4d.js"}, {Key: "config.js"}, {Key: "main.js"}}
	if got := InvalidationPaths(files); !reflect.DeepEqual(got, []string{"/", "/config.js", "/index.html", "/main.js"}) {
		t.Errorf("paths = %v", got)
	}
	var many []File
	for i := 0; i < 20; i++ {
		many = append(many, File{Key: strings.Repeat("p", i+1) + ".html"})
	}
	if got := InvalidationPaths(many); !reflect.DeepEqual(got, []string{"/*"}) {
		t.Errorf("20 paths give %v, want one wildcard", got)
	}
}

func TestContentHashFollowsContentOnly(t *testing.T) {
	a := []File{{Key: "index.html", SHA256: "1"}, {Key: "main.js", SHA256: "2"}}
	b := []File{{Key: "index.html", SHA256: "1"}, {Key: "main.js", SHA256: "3"}}
	if ContentHash(a) != ContentHash(append([]File(nil), a...)) {
		t.Error("same files, different hash")
	}
	if ContentHash(a) == ContentHash(b) {
		t.Error("changed file, same hash")
	}
}

func TestConfigJSSetsTheAPIAddress(t *testing.T) {
	f := ConfigJS(SiteSettings{APIBaseURL: "https://api.example.com", HealthPath: "/health"})
	if !strings.Contains(f.Content, `window.MELODY_FLOW_CONFIG = Object.freeze({"apiBaseUrl":"https://api.example.com","healthPath":"/health"});`) {
		t.Errorf("config.js = %s", f.Content)
	}
	if f.Key != "config.js" || f.CacheControl != CacheRevalidate || f.SHA256 == "" {
		t.Errorf("config.js file = %+v", f)
	}
}

func TestValidationDomainsShareTheWildcardsRecord(t *testing.T) {
	got := ValidationDomains([]string{"example.com", "*.example.com", "www.example.com"})
	if !reflect.DeepEqual(got, []string{"example.com", "www.example.com"}) {
		t.Errorf("got %v", got)
	}
}

func TestBucketPolicyIsValidJSON(t *testing.T) {
	p := BucketPolicy("arn:aws:s3:::b", "arn:aws:cloudfront::1:distribution/E1")
	if !strings.Contains(p, `"AWS:SourceArn":"arn:aws:cloudfront::1:distribution/E1"`) {
		t.Errorf("policy %s", p)
	}
}

func TestShellWordsQuotesEveryPath(t *testing.T) {
	if got := shellWords([]string{"/", "/it's.html"}); got != `'/' '/it'\''s.html'` {
		t.Errorf("got %s", got)
	}
}
