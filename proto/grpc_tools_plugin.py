#!/usr/bin/env python3
"""A protoc plugin that runs one of the generators built into grpcio-tools.

grpcio-tools ships protoc and the gRPC Python generator as a Python module
(grpc_tools.protoc), not as protoc-gen-* executables, so buf cannot start
the gRPC Python generator as a local plugin directly. This script is that
plugin:

    python3 grpc_tools_plugin.py GENERATOR

It reads buf's CodeGeneratorRequest from standard input, writes the
request's file descriptors to a temporary descriptor set, runs
grpc_tools.protoc with --descriptor_set_in and --GENERATOR_out into a
temporary folder, and answers with a CodeGeneratorResponse holding every
file written there. GENERATOR is a generator grpc_tools.protoc knows, such
as grpc_python (gRPC stubs) or python (messages). Plugin options from
buf.gen.yaml (opt) are passed on to the generator.

Nothing is downloaded: only the installed grpcio-tools and protobuf
packages are used.
"""

import os
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def generate(generator: str, request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    response = plugin_pb2.CodeGeneratorResponse()
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    with tempfile.TemporaryDirectory(prefix="grpc-tools-plugin-") as work:
        descriptors = descriptor_pb2.FileDescriptorSet()
        descriptors.file.extend(request.proto_file)
        descriptor_path = os.path.join(work, "descriptors.binpb")
        with open(descriptor_path, "wb") as out:
            out.write(descriptors.SerializeToString())
        out_dir = os.path.join(work, "out")
        os.mkdir(out_dir)
        target = f"{request.parameter}:{out_dir}" if request.parameter else out_dir
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"--descriptor_set_in={descriptor_path}",
                f"--{generator}_out={target}",
                *request.file_to_generate,
            ]
        )
        if status != 0:
            response.error = f"grpc_tools.protoc --{generator}_out exited with status {status}"
            return response
        for folder, _, names in sorted(os.walk(out_dir)):
            for name in sorted(names):
                path = os.path.join(folder, name)
                generated = response.file.add()
                generated.name = os.path.relpath(path, out_dir).replace(os.sep, "/")
                with open(path, encoding="utf-8") as source:
                    generated.content = source.read()
    return response


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write("usage: grpc_tools_plugin.py GENERATOR (such as grpc_python)\n")
        return 2
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = generate(sys.argv[1], request)
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
