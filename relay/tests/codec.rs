//! The codec and the JSON channels, as pure functions.

use bytes::Bytes;
use kdbg_relay::codec::{self, Frame};
use kdbg_relay::resize::ResizeDecoder;
use kdbg_relay::status::Status;
use kdbg_relay::{ExitStatus, ProtocolError, TerminalSize};

#[test]
fn every_channel_round_trips() {
    let payload = Bytes::from_static(b"\x00\xffpayload");
    let frames = [
        Frame::Stdin(payload.clone()),
        Frame::Stdout(payload.clone()),
        Frame::Stderr(payload.clone()),
        Frame::Status(payload.clone()),
        Frame::Resize(payload.clone()),
        Frame::Close(codec::STDIN),
        Frame::Close(codec::STDOUT),
    ];
    let expected_channels = [0u8, 1, 2, 3, 4, 255, 255];
    for (frame, channel) in frames.into_iter().zip(expected_channels) {
        let wire = frame.encode();
        assert_eq!(wire[0], channel, "{frame:?}");
        assert_eq!(Frame::decode(wire).unwrap(), Some(frame));
    }
    assert_eq!(&Frame::Stdout(payload.clone()).encode()[1..], &payload[..]);
    assert_eq!(&Frame::Close(0).encode()[..], &[255, 0]);
}

#[test]
fn empty_message_and_empty_payload_are_skipped() {
    assert_eq!(Frame::decode(Bytes::new()).unwrap(), None);
    for channel in [0u8, 1, 2, 3, 4, 9] {
        assert_eq!(Frame::decode(Bytes::from(vec![channel])).unwrap(), None);
    }
}

#[test]
fn unknown_channel_is_kept_apart() {
    let frame = Frame::decode(Bytes::from_static(b"\x09abc")).unwrap();
    assert_eq!(
        frame,
        Some(Frame::Unknown {
            channel: 9,
            payload: Bytes::from_static(b"abc")
        })
    );
}

#[test]
fn close_signal_of_wrong_length_is_a_protocol_error() {
    for wire in [&[255u8][..], &[255, 0, 0], &[255, 0, 1, 2]] {
        let err = Frame::decode(Bytes::copy_from_slice(wire)).unwrap_err();
        assert!(
            matches!(err, ProtocolError::CloseSignalLength(n) if n == wire.len()),
            "{wire:?}: {err}"
        );
    }
}

#[test]
fn begin_frame_reads_behind_the_channel_byte_without_copying() {
    let mut buf = bytes::BytesMut::new();
    codec::begin_frame(&mut buf, codec::STDOUT, 16);
    buf.extend_from_slice(b"out");
    let ptr = buf.as_ptr();
    let message = buf.split().freeze();
    assert_eq!(message.as_ptr(), ptr);
    assert_eq!(
        Frame::decode(message).unwrap(),
        Some(Frame::Stdout("out".into()))
    );
}

#[test]
fn resize_value_split_across_three_messages() {
    let mut decoder = ResizeDecoder::default();
    assert_eq!(decoder.feed(b"{\"Width\":1").unwrap(), vec![]);
    assert_eq!(decoder.feed(b"20,\"Hei").unwrap(), vec![]);
    assert_eq!(
        decoder.feed(b"ght\":40}\n").unwrap(),
        vec![TerminalSize {
            cols: 120,
            rows: 40
        }]
    );
}

#[test]
fn resize_two_values_in_one_message_and_both_spellings() {
    let mut decoder = ResizeDecoder::default();
    let sizes = decoder
        .feed(b"{\"Width\":80,\"Height\":24}\n{\"width\":100,\"height\":30}")
        .unwrap();
    assert_eq!(
        sizes,
        vec![
            TerminalSize { cols: 80, rows: 24 },
            TerminalSize {
                cols: 100,
                rows: 30
            }
        ]
    );
    // A value may also end right behind the previous one with no separator at all.
    let sizes = decoder.feed(b"{\"WIDTH\":1,\"HEIGHT\":2}").unwrap();
    assert_eq!(sizes, vec![TerminalSize { cols: 1, rows: 2 }]);
}

#[test]
fn resize_rejects_garbage_and_endless_values() {
    let mut decoder = ResizeDecoder::default();
    assert!(decoder.feed(b"[1,2]").is_err());
    let mut decoder = ResizeDecoder::default();
    assert!(decoder.feed(b"{\"Width\":70000,\"Height\":1}").is_err());
    let mut decoder = ResizeDecoder::default();
    let mut endless = b"{\"Width\":\"".to_vec();
    endless.extend(std::iter::repeat_n(b'x', 5000));
    assert!(decoder.feed(&endless).is_err());
}

#[test]
fn resize_json_is_what_kubectl_sends() {
    let json = TerminalSize {
        cols: 132,
        rows: 43,
    }
    .to_json();
    assert_eq!(&json[..], b"{\"Width\":132,\"Height\":43}\n");
}

#[test]
fn status_success_has_the_exact_shape() {
    let json: serde_json::Value = serde_json::from_slice(&ExitStatus::Code(0).to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"metadata": {}, "status": "Success"})
    );
}

#[test]
fn status_exit_codes_round_trip_with_the_exit_code_cause() {
    for code in [1u8, 255] {
        let wire = ExitStatus::Code(code).to_json();
        let json: serde_json::Value = serde_json::from_slice(&wire).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
            })
        );
        assert_eq!(
            ExitStatus::from_json(&wire).unwrap(),
            ExitStatus::Code(code)
        );
    }
    assert_eq!(
        ExitStatus::from_json(&ExitStatus::Code(0).to_json()).unwrap(),
        ExitStatus::Code(0)
    );
}

#[test]
fn status_parses_what_the_kubelet_sends() {
    let kubelet = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 42], exit code 42","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"42"}]}}"#;
    assert_eq!(
        ExitStatus::from_json(kubelet).unwrap(),
        ExitStatus::Code(42)
    );
    let internal = br#"{"metadata":{},"status":"Failure","message":"container not found","reason":"InternalError"}"#;
    assert_eq!(
        ExitStatus::from_json(internal).unwrap(),
        ExitStatus::Failure {
            reason: "InternalError".into(),
            message: "container not found".into()
        }
    );
    let out_of_range = br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"256"}]}}"#;
    assert!(ExitStatus::from_json(out_of_range).is_err());
}

#[test]
fn an_ended_process_keeps_its_code_for_kubectl_and_its_reason_for_us() {
    let ended = ExitStatus::Ended {
        code: 137,
        reason: "TargetGone".into(),
        message: "target container docker://t is gone".into(),
    };
    let wire = ended.to_json();
    let json: serde_json::Value = serde_json::from_slice(&wire).unwrap();
    // What kubectl reads: a non-zero exit with its ExitCode cause first.
    assert_eq!(json["reason"], "NonZeroExitCode");
    assert_eq!(json["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(json["details"]["causes"][0]["message"], "137");
    assert_eq!(ExitStatus::from_json(&wire).unwrap(), ended);
}

#[test]
fn http_error_status_is_the_apiserver_shape() {
    let json =
        serde_json::to_value(Status::http_error(404, "NotFound", "pods \"x\" not found")).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "pods \"x\" not found", "reason": "NotFound", "code": 404
        })
    );
}
