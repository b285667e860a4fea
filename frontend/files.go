package frontend

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// ConfigJSKey is the object the stack writes itself: the frontend's runtime settings.
const ConfigJSKey = "config.js"

// File is one object of the site bucket.
type File struct {
	Key          string // object key, slash-separated, relative to the site root
	Path         string // local file; empty for generated content
	Content      string // generated content when Path is empty
	ContentType  string
	CacheControl string
	SHA256       string // of the content, so that a changed file changes the object's inputs
}

// contentTypes is explicit so uploads do not depend on the deploying machine's MIME database
// (on some systems .js maps to text/plain, which browsers refuse for modules).
var contentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".htm":         "text/html; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".json":        "application/json",
	".map":         "application/json",
	".webmanifest": "application/manifest+json",
	".txt":         "text/plain; charset=utf-8",
	".xml":         "application/xml",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".jpg":         "image/jpeg",
	".jpeg":        "image/jpeg",
	".gif":         "image/gif",
	".webp":        "image/webp",
	".avif":        "image/avif",
	".ico":         "image/x-icon",
	".woff":        "font/woff",
	".woff2":       "font/woff2",
	".ttf":         "font/ttf",
	".otf":         "font/otf",
	".wasm":        "application/wasm",
	".mp3":         "audio/mpeg",
	".wav":         "audio/wav",
	".ogg":         "audio/ogg",
	".mid":         "audio/midi",
	".midi":        "audio/midi",
	".pdf":         "application/pdf",
}

// ContentType is the Content-Type of an object key, from the extension alone.
func ContentType(key string) string {
	if ct, ok := contentTypes[strings.ToLower(path.Ext(key))]; ok {
		return ct
	}
	return "application/octet-stream"
}

// Cache-Control values by kind of file.
const (
	CacheRevalidate = "public, max-age=0, must-revalidate"  // HTML and config.js: always the current release
	CacheImmutable  = "public, max-age=31536000, immutable" // fingerprinted: the name changes with the content
	CacheShort      = "public, max-age=300"                 // everything else: stale for at most five minutes
)

// fingerprint matches a content hash in a file name as bundlers write it: "app.3f2a9c1b.js",
// "index-DiwrgT4a.js". A digit and a letter are both required, so plain words such as
// "component" are not taken for hashes: a missed hash only costs a short cache, a false one
// would pin a stale file for a year.
var fingerprint = regexp.MustCompile(`[.-]([A-Za-z0-9_]{8,})\.[A-Za-z0-9]+$`)

// IsFingerprinted reports whether the key's file name carries a content hash.
func IsFingerprinted(key string) bool {
	m := fingerprint.FindStringSubmatch(path.Base(key))
	return m != nil && strings.ContainsAny(m[1], "0123456789") && strings.IndexFunc(m[1], isLetter) >= 0
}

func isLetter(r rune) bool { return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') }

// CacheControl is the Cache-Control of an object key.
func CacheControl(key string) string {
	switch {
	case key == ConfigJSKey || ContentType(key) == contentTypes[".html"]:
		return CacheRevalidate
	case IsFingerprinted(key):
		return CacheImmutable
	default:
		return CacheShort
	}
}

// ScanStatic lists the files under dir, recursively, sorted by key. Hidden files and folders
// (a name starting with ".") are skipped, and so is a config.js at the root, which the stack
// generates. It returns the keys it skipped for that reason, so the caller can say so.
func ScanStatic(dir string) (files []File, shadowed []string, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, walkErr error) error {
		if walkErr != nil {
			return walkErr
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if key == ConfigJSKey {
			shadowed = append(shadowed, key)
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, File{
			Key: key, Path: p,
			ContentType: ContentType(key), CacheControl: CacheControl(key),
			SHA256: sha256Hex(data),
		})
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading the site files in %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, nil, fmt.Errorf("the site folder %s has no files to upload", dir)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Key < files[j].Key })
	return files, shadowed, nil
}

// SiteSettings are what the browser code needs to know about the stack.
type SiteSettings struct {
	APIBaseURL string `json:"apiBaseUrl"`
	HealthPath string `json:"healthPath"`
}

// ConfigJS renders config.js, which index.html loads before the app, so that the same static/
// works for every stack.
func ConfigJS(s SiteSettings) File {
	body, _ := json.Marshal(s) // a struct of strings always marshals
	content := "// Generated by the Pulumi stack; do not edit.\nwindow.MELODY_FLOW_CONFIG = Object.freeze(" + string(body) + ");\n"
	return File{
		Key: ConfigJSKey, Content: content,
		ContentType: ContentType(ConfigJSKey), CacheControl: CacheControl(ConfigJSKey),
		SHA256: sha256Hex([]byte(content)),
	}
}

// maxInvalidationPaths bounds the paths of one invalidation: past it a single "/*" is cheaper
// (CloudFront bills every path beyond the first 1,000 a month, and "/*" counts as one).
const maxInvalidationPaths = 15

// InvalidationPaths are the paths to invalidate after an upload: every object that is not
// fingerprinted (a fingerprinted one gets a new name when it changes), and "/" for the root
// object.
func InvalidationPaths(files []File) []string {
	paths := []string{"/"}
	for _, f := range files {
		if !IsFingerprinted(f.Key) {
			paths = append(paths, "/"+f.Key)
		}
	}
	if len(paths) > maxInvalidationPaths {
		return []string{"/*"}
	}
	sort.Strings(paths)
	return paths
}

// ContentHash identifies a release of the site: it changes when any object's key, content,
// type or caching changes, and only then.
func ContentHash(files []File) string {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\n", f.Key, f.SHA256, f.ContentType, f.CacheControl)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
