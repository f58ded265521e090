package bridge

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// LoadDescriptorSet reads a binary FileDescriptorSet, as written by
// `buf build -o file.binpb` or `protoc --descriptor_set_out`, for use with
// [WithFiles]. Imports that the set leaves out (buf's --exclude-imports) are
// taken from the descriptors compiled into the program, such as the
// well-known types and google/api.
func LoadDescriptorSet(path string) (*protoregistry.Files, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bridge: descriptor set: %w", err)
	}
	var set descriptorpb.FileDescriptorSet
	// GlobalTypes knows the bridge's and google.api's options, so they are
	// parsed rather than kept as unknown fields.
	if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("bridge: descriptor set %s: not a FileDescriptorSet: %w", path, err)
	}
	files, err := NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("bridge: descriptor set %s: %w", path, err)
	}
	return files, nil
}

// NewFiles builds a schema for [WithFiles] from a FileDescriptorSet, in any
// order of files. Imports missing from the set are resolved against
// [protoregistry.GlobalFiles] but not added to the schema, so their services
// are never exposed by accident.
func NewFiles(set *descriptorpb.FileDescriptorSet) (*protoregistry.Files, error) {
	files := new(protoregistry.Files)
	resolver := &fallbackFiles{local: files}
	pending := set.GetFile()
	// Register files whose imports are resolvable, pass after pass, so the
	// set need not be in dependency order. Each pass registers at least one
	// file or ends the loop.
	for len(pending) > 0 {
		var next []*descriptorpb.FileDescriptorProto
		var lastErr error
		for _, fdp := range pending {
			fd, err := protodesc.NewFile(fdp, resolver)
			if err != nil {
				next = append(next, fdp)
				lastErr = fmt.Errorf("%s: %w", fdp.GetName(), err)
				continue
			}
			if err := files.RegisterFile(fd); err != nil {
				return nil, fmt.Errorf("%s: %w", fdp.GetName(), err)
			}
		}
		if len(next) == len(pending) {
			return nil, unresolvable(next, resolver, lastErr)
		}
		pending = next
	}
	return files, nil
}

// fallbackFiles resolves descriptors in local first, then in the program's
// compiled-in registry.
type fallbackFiles struct {
	local *protoregistry.Files
}

func (f *fallbackFiles) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	fd, err := f.local.FindFileByPath(path)
	if errors.Is(err, protoregistry.NotFound) {
		return protoregistry.GlobalFiles.FindFileByPath(path)
	}
	return fd, err
}

func (f *fallbackFiles) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	d, err := f.local.FindDescriptorByName(name)
	if errors.Is(err, protoregistry.NotFound) {
		return protoregistry.GlobalFiles.FindDescriptorByName(name)
	}
	return d, err
}

// unresolvable explains why no file of pending can be built: the first
// import that is neither in the set nor compiled in, or else a cycle.
func unresolvable(pending []*descriptorpb.FileDescriptorProto, resolver *fallbackFiles, fallback error) error {
	inSet := make(map[string]bool, len(pending))
	for _, fdp := range pending {
		inSet[fdp.GetName()] = true
	}
	for _, fdp := range pending {
		for _, dep := range fdp.GetDependency() {
			if inSet[dep] {
				continue
			}
			if _, err := resolver.FindFileByPath(dep); err != nil {
				return fmt.Errorf("%s imports %s, which is neither in the set nor compiled into the bridge", fdp.GetName(), dep)
			}
		}
	}
	names := make([]string, 0, len(pending))
	for _, fdp := range pending {
		names = append(names, fdp.GetName())
	}
	if fallback != nil {
		return fmt.Errorf("cannot build %s: %w", strings.Join(names, ", "), fallback)
	}
	return fmt.Errorf("cannot build %s", strings.Join(names, ", "))
}
