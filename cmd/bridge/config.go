package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// Config is everything the bridge binary can be told on its command line.
type Config struct {
	Addr              string
	Demo              bool
	Backends          []string // "target" or "pattern=target"
	Descriptors       string
	Expose            []string
	RequestHeaders    []string
	ResponseMetadata  []string
	TLSCert           string
	TLSKey            string
	H2C               bool
	HeartbeatInterval time.Duration
	RetryInterval     time.Duration
	WriteTimeout      time.Duration
	DrainTimeout      time.Duration
	LogFormat         string
	LogLevel          string
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// parseFlags reads the command line into a Config and checks it.
func parseFlags(args []string) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("bridge", flag.ContinueOnError)
	fs.StringVar(&c.Addr, "addr", ":8080", "listen address `host:port`")
	fs.BoolVar(&c.Demo, "demo", false, "run the demo services in-process, expose them and serve the demo page at /")
	fs.Var((*listFlag)(&c.Backends), "backend", "gRPC `target` for every exposed service, or pattern=target for the services matching pattern (repeatable)")
	fs.StringVar(&c.Descriptors, "descriptors", "", "binary FileDescriptorSet `file` (buf build -o) holding the exposed services; default: the compiled-in descriptors")
	fs.Var((*listFlag)(&c.Expose), "expose", "expose the methods matching `pattern`: pkg.*, pkg.Service or pkg.Service/Method (repeatable)")
	fs.Var((*listFlag)(&c.RequestHeaders), "request-header", "forward this request `header` (or prefix*) to backends as metadata (repeatable; replaces the default list)")
	fs.Var((*listFlag)(&c.ResponseMetadata), "response-metadata", "pass this backend metadata `key` (or prefix*) to browsers (repeatable)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "TLS certificate `file`: serve HTTPS with HTTP/2")
	fs.StringVar(&c.TLSKey, "tls-key", "", "TLS private key `file`")
	fs.BoolVar(&c.H2C, "h2c", false, "serve cleartext HTTP/2 (behind a proxy) besides HTTP/1.1")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat", 15*time.Second, "SSE heartbeat interval")
	fs.DurationVar(&c.RetryInterval, "retry", 2*time.Second, "SSE reconnection time sent to browsers")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", 10*time.Second, "bound of each write to a browser")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 10*time.Second, "time to drain streams after SIGTERM")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return c, c.validate()
}

func (c *Config) validate() error {
	var errs []error
	if !c.Demo && len(c.Expose) == 0 {
		errs = append(errs, errors.New("nothing exposed: give -expose (or -demo)"))
	}
	if !c.Demo && len(c.Backends) == 0 {
		errs = append(errs, errors.New("no backend: give -backend (or -demo)"))
	}
	if c.Demo && len(c.Backends) > 0 {
		errs = append(errs, errors.New("-demo runs its own backend: drop -backend"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("-tls-cert and -tls-key go together"))
	}
	if c.TLSCert != "" && c.H2C {
		errs = append(errs, errors.New("-h2c is for cleartext; with TLS, HTTP/2 is on already"))
	}
	defaults := 0
	for _, b := range c.Backends {
		pattern, target, ok := strings.Cut(b, "=")
		switch {
		case !ok:
			defaults++
		case pattern == "" || target == "":
			errs = append(errs, fmt.Errorf("-backend %q: want target or pattern=target", b))
		}
	}
	if defaults > 1 {
		errs = append(errs, errors.New("more than one default -backend: name the services of the others with pattern=target"))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("-log-format %q: want text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}
