//! The `covenant.v1` gRPC services and messages, generated at build time from
//! `proto/covenant/v1/covenant.proto`, and the codec they use. Nothing else
//! lives here: conversion to and from `covenant-core` types happens at the
//! edges (server, agent, CLI).

pub mod codec;

/// Package `covenant.v1`.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)] // generated code
    tonic::include_proto!("covenant.v1");
}

/// The encoded `FileDescriptorSet` of `covenant.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("covenant_descriptor");
