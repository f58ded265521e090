package main

// The xds resolver and balancers, so that -backend xds:///name works in a
// process that a service mesh has configured for xDS (GRPC_XDS_BOOTSTRAP).
import _ "google.golang.org/grpc/xds"
