package main

import (
	"context"
	"fmt"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// tracing is the optional OpenTelemetry setup: a server span per browser
// request, continuing the browser's W3C trace context, and a client span per
// backend call, whose context travels to the backend as traceparent. A nil
// *tracing traces nothing; without it, traceparent and tracestate still pass
// through to backends by the header allow-list.
type tracing struct {
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
	shutdown   func(context.Context) error
}

// setupTracing exports spans over OTLP/gRPC to cfg.OTLPEndpoint, or
// returns nil when no endpoint is configured.
func setupTracing(ctx context.Context, cfg *Config) (*tracing, error) {
	if cfg.OTLPEndpoint == "" {
		return nil, nil
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint)}
	if cfg.OTLPInsecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exporter, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName(cfg.ServiceName))
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	return newTracing(provider, provider.Shutdown), nil
}

func newTracing(provider trace.TracerProvider, shutdown func(context.Context) error) *tracing {
	return &tracing{
		provider:   provider,
		propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		shutdown:   shutdown,
	}
}

// wrapHTTP traces every request that h serves. Span names carry the HTTP
// method only: paths are not bounded (every 404 has its own).
func (t *tracing) wrapHTTP(h http.Handler) http.Handler {
	if t == nil {
		return h
	}
	return otelhttp.NewHandler(h, "bridge",
		otelhttp.WithTracerProvider(t.provider),
		otelhttp.WithPropagators(t.propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "bridge " + r.Method }),
	)
}

// dialOptions traces backend calls.
func (t *tracing) dialOptions() []grpc.DialOption {
	if t == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(t.provider),
		otelgrpc.WithPropagators(t.propagator),
	))}
}

// close flushes the spans still buffered.
func (t *tracing) close(ctx context.Context) error {
	if t == nil || t.shutdown == nil {
		return nil
	}
	return t.shutdown(ctx)
}
