// Command backend is a new user's gRPC server: acme.feed.v1.Feed, which the
// bridge exposes, acme.admin.v1.Admin, which it does not, and server
// reflection, from which the bridge takes the schema. It prints the address
// it listens on, then serves until killed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	adminv1 "example.com/acme/gen/acme/admin/v1"
	feedv1 "example.com/acme/gen/acme/feed/v1"
)

type feed struct {
	feedv1.UnimplementedFeedServer
}

// Watch sends limit items after after_seq, one every 20 ms. Items are
// numbered in tens, so that an event id that is the item's seq (the
// cursor option) differs from a count of events.
func (feed) Watch(req *feedv1.WatchRequest, stream grpc.ServerStreamingServer[feedv1.Item]) error {
	if req.GetFeed() == "" {
		return status.Error(codes.InvalidArgument, "feed is required")
	}
	limit := uint64(req.GetLimit())
	if limit == 0 {
		limit = 3
	}
	for i := uint64(1); i <= limit; i++ {
		seq := req.GetAfterSeq() + 10*i
		item := &feedv1.Item{Seq: seq, Feed: req.GetFeed(), Text: fmt.Sprintf("item %d of %s", seq, req.GetFeed())}
		if err := stream.Send(item); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Chat answers each message with "user: text" until the client is done.
func (feed) Chat(stream grpc.BidiStreamingServer[feedv1.ChatMessage, feedv1.ChatMessage]) error {
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&feedv1.ChatMessage{User: "feed", Text: msg.GetUser() + ": " + msg.GetText()}); err != nil {
			return err
		}
	}
}

type admin struct {
	adminv1.UnimplementedAdminServer
}

func (admin) Purge(context.Context, *adminv1.PurgeRequest) (*adminv1.PurgeResponse, error) {
	return &adminv1.PurgeResponse{}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen on this host:port")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	server := grpc.NewServer()
	feedv1.RegisterFeedServer(server, feed{})
	adminv1.RegisterAdminServer(server, admin{})
	reflection.Register(server)
	fmt.Println("listening on", lis.Addr())
	log.Fatal(server.Serve(lis))
}
