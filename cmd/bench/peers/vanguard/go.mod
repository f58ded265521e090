module github.com/grpcbridge/grpcbridge/cmd/bench/peers/vanguard

go 1.26.8

require (
	connectrpc.com/vanguard v0.4.0
	github.com/grpcbridge/grpcbridge v0.0.0
	golang.org/x/net v0.61.0
)

require (
	connectrpc.com/connect v1.19.1 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20261104224025-d1e00e9f33ab // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261104224025-d1e00e9f33ab // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// The demo protos come from the bridge's own module, at this commit.
replace github.com/grpcbridge/grpcbridge => ../../../..
