// Command pstest-server serves Google's Go Pub/Sub fake (cloud.google.com/go/pubsub/pstest)
// on a given address, for test sessions on machines without Google's Java emulator.
//
// Built by tests/servers/pubsub.py from Debian's golang-google-cloud-dev in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o pstest-server main.go
//	./pstest-server 127.0.0.1:PORT   # prints "pstest listening on 127.0.0.1:PORT"
package main

import (
	"context"
	"fmt"
	"net"
	"os"

	"cloud.google.com/go/pubsub/pstest"
	pb "google.golang.org/genproto/googleapis/pubsub/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// guard keeps pstest's faults from killing the whole server: a modify_ack_deadline
// with an unknown ack id panics inside pstest, and a subscription created without
// ack_deadline_seconds fails with UNKNOWN (which clients retry for a minute).
func guard(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp interface{}, err error) {
	if sub, ok := req.(*pb.Subscription); ok && sub.AckDeadlineSeconds == 0 {
		sub.AckDeadlineSeconds = 10
	}
	defer func() {
		if r := recover(); r != nil {
			err = status.Errorf(codes.InvalidArgument, "pstest panicked in %s: %v", info.FullMethod, r)
		}
	}()
	return handler(ctx, req)
}

func main() {
	addr := "127.0.0.1:0"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	// NewServer also listens on a port of its own; only its GServer is used here.
	fake := pstest.NewServer()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(guard))
	pb.RegisterPublisherServer(srv, &fake.GServer)
	pb.RegisterSubscriberServer(srv, &fake.GServer)
	fmt.Printf("pstest listening on %s\n", lis.Addr())
	if err := srv.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
