package main

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// loadConfigFile reads a YAML config file into c. Parsing is strict: an
// unknown key, a value of the wrong type or a duplicate key is an error
// that names the file, the line and the key's full path, so a typo never
// silently falls back to a default.
func loadConfigFile(path string, c *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file sets nothing
	}
	d := &nodeDecoder{file: path}
	return d.decode(doc.Content[0], reflect.ValueOf(c).Elem(), "")
}

// nodeDecoder decodes YAML nodes into Go values by their `yaml` struct
// tags, keeping track of where it is for error messages.
type nodeDecoder struct {
	file string
}

var durationType = reflect.TypeFor[time.Duration]()

func (d *nodeDecoder) errorf(n *yaml.Node, key, format string, args ...any) error {
	where := fmt.Sprintf("config %s:%d", d.file, n.Line)
	if key != "" {
		where += ": " + key
	}
	return fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...))
}

func (d *nodeDecoder) decode(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // key present without a value: keep the default
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}
	switch {
	case v.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			return d.errorf(n, key, "want a duration such as 10s or 1m30s")
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil || dur < 0 {
			return d.errorf(n, key, "%q is not a duration such as 10s or 1m30s", n.Value)
		}
		v.SetInt(int64(dur))
		return nil
	case v.Kind() == reflect.Struct:
		return d.decodeStruct(n, v, key)
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.errorf(n, key, "want a list")
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case v.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return d.errorf(n, key, "want a mapping")
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			elem := reflect.New(v.Type().Elem()).Elem()
			path := key + "." + k.Value
			if err := d.decode(val, elem, path); err != nil {
				return err
			}
			if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				return d.errorf(k, path, "duplicate key")
			}
			m.SetMapIndex(reflect.ValueOf(k.Value), elem)
		}
		v.Set(m)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return d.errorf(n, key, "want a %s value", kindName(v.Kind()))
	}
	switch v.Kind() {
	case reflect.String:
		if n.Tag != "!!str" {
			return d.errorf(n, key, "want a string, got %s (quote it)", n.Value)
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if err != nil || n.Tag != "!!bool" {
			return d.errorf(n, key, "want true or false, got %q", n.Value)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		i, err := strconv.ParseInt(n.Value, 10, 64)
		if err != nil || n.Tag != "!!int" {
			return d.errorf(n, key, "want an integer, got %q", n.Value)
		}
		v.SetInt(i)
	default:
		return d.errorf(n, key, "unsupported setting type %s", v.Type())
	}
	return nil
}

func (d *nodeDecoder) decodeStruct(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind != yaml.MappingNode {
		return d.errorf(n, key, "want a mapping")
	}
	fields := make(map[string]int)
	for i := range v.NumField() {
		if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			fields[name] = i
		}
	}
	seen := make(map[string]bool)
	for i := 0; i < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		path := k.Value
		if key != "" {
			path = key + "." + k.Value
		}
		idx, ok := fields[k.Value]
		if !ok {
			return d.errorf(k, path, "unknown key (known: %s)", strings.Join(sortedKeys(fields), ", "))
		}
		if seen[k.Value] {
			return d.errorf(k, path, "duplicate key")
		}
		seen[k.Value] = true
		if err := d.decode(val, v.Field(idx), path); err != nil {
			return err
		}
	}
	return nil
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Bool:
		return "boolean"
	default:
		return k.String()
	}
}
