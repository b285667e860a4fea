// Command plan shows what the stack would build, without AWS credentials or network: it runs
// the real program against the mock AWS of internal/mocks with the stack's config and prints
// every resource (a tree, or JSON with --json), the outputs, and optionally writes the files
// that would land on the API host.
//
//	go run ./cmd/plan [--stack prod] [--config melody-flow:key=value ...] [--json | --critical-path | --cost] [--host-files DIR]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"github.com/melody-flow/infra/internal/cost"
	"github.com/melody-flow/infra/internal/deploytime"
	"github.com/melody-flow/infra/internal/mocks"
	"github.com/melody-flow/infra/stack"
)

type overrides map[string]string

func (o overrides) String() string { return fmt.Sprint(map[string]string(o)) }

func (o overrides) Set(s string) error {
	key, value, ok := strings.Cut(s, "=")
	if !ok || !strings.Contains(key, ":") {
		return fmt.Errorf("want namespace:key=value, e.g. %s:domain=example.com", stack.ConfigNamespace)
	}
	o[key] = value
	return nil
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "plan:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("plan", flag.ContinueOnError)
	stackName := flags.String("stack", "prod", "stack whose Pulumi.<stack>.yaml is read")
	asJSON := flags.Bool("json", false, "print resources and outputs as JSON")
	showCost := flags.Bool("cost", false, "print the estimated monthly cost of the always-on parts and the unit prices used")
	criticalPath := flags.Bool("critical-path", false, "print the longest chain of a first deploy with estimated AWS times")
	hostFilesDir := flags.String("host-files", "", "write the rendered host files (user-data, compose, nginx, scripts) to this folder")
	extra := overrides{}
	flags.Var(extra, "config", "override a config value, namespace:key=value (repeatable)")
	if err := flags.Parse(args); err != nil {
		return err
	}

	config, err := stack.ReadStackConfig(".", *stackName)
	if err != nil {
		return err
	}
	for k, v := range extra {
		config[k] = v
	}
	// Validate first, so a bad value is reported on its own, before anything is registered.
	cfg, err := stack.ParseConfig(projectKeys(config), time.Now())
	if err != nil {
		return err
	}
	rec, outputs, err := stack.RunOffline(*stackName, config)
	if err != nil {
		return err
	}
	if *hostFilesDir != "" {
		if err := writeHostFiles(*hostFilesDir, cfg); err != nil {
			return err
		}
	}
	if *asJSON {
		return printJSON(stdout, rec, outputs)
	}
	if *showCost {
		cost.Monthly(cost.Inputs{
			InstanceType: cfg.InstanceType, SpotMaxPrice: cfg.SpotMaxPrice,
			RootVolumeGiB: cfg.RootVolumeGiB, AlarmsEnabled: cfg.AlarmsEnabled,
		}).Print(stdout)
		return nil
	}
	if *criticalPath {
		deploytime.Of(rec.Resources()).Print(stdout)
		return nil
	}
	printTree(stdout, rec, outputs)
	if *hostFilesDir != "" {
		fmt.Fprintf(stdout, "\nHost files written to %s\n", *hostFilesDir)
	}
	return nil
}

// writeHostFiles renders the files for the API host exactly as the program does.
func writeHostFiles(dir string, cfg stack.Config) error {
	files, err := stack.RenderHostFiles(cfg)
	if err != nil {
		return err
	}
	all := map[string]string{"user-data.yaml": files.CloudInit}
	for rel, content := range files.Files {
		all[filepath.Join("opt-melody-flow", rel)] = content
	}
	for rel, content := range all {
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// projectKeys returns the values of the project's namespace, keyed without it.
func projectKeys(config map[string]string) map[string]string {
	raw := map[string]string{}
	for k, v := range config {
		if key, ok := strings.CutPrefix(k, stack.ConfigNamespace+":"); ok {
			raw[key] = v
		}
	}
	return raw
}

// printTree prints the resources nested under their parents, in URN order.
func printTree(w io.Writer, rec *mocks.Recorder, outputs map[string]stack.OutputValue) {
	children := map[string][]*mocks.Resource{}
	for _, r := range rec.Resources() {
		children[r.Parent] = append(children[r.Parent], r)
	}
	var roots []*mocks.Resource
	for parent, rs := range children {
		if rec.ByURN(parent) == nil {
			roots = append(roots, rs...)
		}
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].URN < roots[j].URN })

	fmt.Fprintf(w, "Stack %s: %d resources (offline plan against mock AWS)\n\n", stackOf(rec), len(rec.Resources()))
	var walk func(r *mocks.Resource, depth int)
	walk = func(r *mocks.Resource, depth int) {
		line := fmt.Sprintf("%s+ %s  %s", strings.Repeat("    ", depth), r.Type, r.Name)
		if r.Provider != "" {
			line += "  (provider " + resource.URN(r.ProviderURN()).Name() + ")"
		}
		fmt.Fprintln(w, line)
		for _, c := range children[r.URN] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}

	fmt.Fprintln(w, "\nOutputs:")
	for _, name := range sortedNames(outputs) {
		fmt.Fprintf(w, "    %-24s %s\n", name, formatOutput(outputs[name]))
	}
}

func printJSON(w io.Writer, rec *mocks.Recorder, outputs map[string]stack.OutputValue) error {
	type jsonResource struct {
		URN          string         `json:"urn"`
		Type         string         `json:"type"`
		Name         string         `json:"name"`
		Parent       string         `json:"parent,omitempty"`
		Provider     string         `json:"provider,omitempty"`
		Inputs       map[string]any `json:"inputs"`
		Dependencies []string       `json:"dependencies"`
	}
	doc := struct {
		Resources []jsonResource `json:"resources"`
		Outputs   map[string]any `json:"outputs"`
	}{Outputs: map[string]any{}}
	for _, r := range rec.Resources() {
		deps := r.Dependencies
		if deps == nil {
			deps = []string{}
		}
		doc.Resources = append(doc.Resources, jsonResource{
			URN: r.URN, Type: r.Type, Name: r.Name, Parent: r.Parent, Provider: r.Provider,
			Inputs: printable(r.Inputs), Dependencies: deps,
		})
	}
	for name, out := range outputs {
		doc.Outputs[name] = formatOutputValue(out)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// printable turns resource inputs into JSON-ready values; secrets print as "[secret]".
func printable(m resource.PropertyMap) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if strings.HasPrefix(string(k), "__") {
			continue // engine bookkeeping such as __defaults
		}
		out[string(k)] = printableValue(v)
	}
	return out
}

func printableValue(v resource.PropertyValue) any {
	switch {
	case v.IsSecret():
		return "[secret]"
	case v.IsComputed():
		return "[unknown]"
	case v.IsOutput():
		if v.OutputValue().Secret {
			return "[secret]"
		}
		if !v.OutputValue().Known {
			return "[unknown]"
		}
		return printableValue(v.OutputValue().Element)
	case v.IsAsset():
		a := v.AssetValue()
		if a.Path != "" {
			return map[string]any{"asset": a.Path}
		}
		return map[string]any{"asset": "text", "sha256": a.Hash}
	case v.IsArchive():
		return map[string]any{"archive": v.ArchiveValue().Path}
	case v.IsArray():
		var arr []any
		for _, e := range v.ArrayValue() {
			arr = append(arr, printableValue(e))
		}
		return arr
	case v.IsObject():
		return printable(v.ObjectValue())
	case v.IsResourceReference():
		return v.ResourceReferenceValue().URN
	}
	return v.Mappable()
}

func formatOutput(o stack.OutputValue) string {
	return fmt.Sprint(formatOutputValue(o))
}

func formatOutputValue(o stack.OutputValue) any {
	switch {
	case o.Secret:
		return "[secret]"
	case !o.Known:
		return "[unknown]"
	}
	return o.Value
}

func sortedNames(m map[string]stack.OutputValue) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

func stackOf(rec *mocks.Recorder) string {
	for _, r := range rec.Resources() {
		return resource.URN(r.URN).Stack().String()
	}
	return ""
}
