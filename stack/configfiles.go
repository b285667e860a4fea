package stack

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// ReadStackConfig merges the defaults that Pulumi.yaml declares with the values of
// Pulumi.<stack>.yaml, as the Pulumi CLI does before it starts the program, and returns them
// with full keys ("melody-flow:domain", "aws:region") and the string values Pulumi passes
// (JSON for lists). The offline plan and the tests run the program with it.
func ReadStackConfig(projectDir, stackName string) (map[string]string, error) {
	var project struct {
		Name   string `yaml:"name"`
		Config map[string]struct {
			Default any `yaml:"default"`
		} `yaml:"config"`
	}
	if err := readYAML(filepath.Join(projectDir, "Pulumi.yaml"), &project); err != nil {
		return nil, err
	}
	config := map[string]string{}
	for key, decl := range project.Config {
		if decl.Default == nil {
			continue
		}
		value, err := configString(decl.Default)
		if err != nil {
			return nil, fmt.Errorf("Pulumi.yaml: default of %s: %w", key, err)
		}
		config[fullKey(project.Name, key)] = value
	}

	var stackFile struct {
		Config map[string]any `yaml:"config"`
	}
	stackPath := filepath.Join(projectDir, "Pulumi."+stackName+".yaml")
	if err := readYAML(stackPath, &stackFile); err != nil {
		return nil, err
	}
	for key, raw := range stackFile.Config {
		if m, ok := raw.(map[string]any); ok && m["secure"] != nil {
			return nil, fmt.Errorf("%s: %s is encrypted; the offline plan cannot decrypt it, override it with --config", stackPath, key)
		}
		value, err := configString(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", stackPath, key, err)
		}
		config[fullKey(project.Name, key)] = value
	}
	return config, nil
}

func fullKey(project, key string) string {
	if strings.Contains(key, ":") {
		return key
	}
	return project + ":" + key
}

// configString renders a YAML value the way Pulumi hands config to a program.
func configString(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool, int, float64:
		return fmt.Sprint(v), nil
	default:
		b, err := json.Marshal(v)
		return string(b), err
	}
}

func readYAML(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
