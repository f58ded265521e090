// Command feedcheck prints the bridge options of FeedService's methods as
// the generated code declares them: it builds only when the generated Go
// of feed.proto imports the bridge's own gen/bridge/v1.
package main

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	feedv1 "example.com/acme/gen/acme/feed/v1"
	bridgev1 "github.com/grpcbridge/grpcbridge/gen/bridge/v1"
)

func main() {
	methods := feedv1.File_acme_feed_v1_feed_proto.Services().ByName("FeedService").Methods()
	for i := range methods.Len() {
		m := methods.Get(i)
		opts := proto.GetExtension(m.Options(), bridgev1.E_Method).(*bridgev1.MethodOptions)
		fmt.Printf("%s cursor_field=%q resume_field=%q\n", m.FullName(), opts.GetSse().GetCursorField(), opts.GetSse().GetResumeField())
	}
	var _ feedv1.FeedServiceServer = feedv1.UnimplementedFeedServiceServer{}
}
