//! Messages of the kinds a voicemail server sends: plain 7-bit text, 8-bit (UTF-8) text in
//! a MIME part declared `8bit`, and a voicemail with its recording attached as a `.wav`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A 7-bit text message.
pub fn text(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Voicemail <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}.test@pbx.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}"
    )
    .into_bytes()
}

/// A UTF-8 text part sent as `8bit`, with headers in ASCII.
pub fn eight_bit(from: &str, to: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: =?utf-8?q?Nachricht_f=C3=BCr_Sie?=\r\n\
         Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <8bit.test@pbx.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{body}"
    )
    .into_bytes()
}

/// `seconds` of 8 kHz 16-bit mono PCM (a 440 Hz tone), as a voicemail box records it.
pub fn wav(seconds: u32) -> Vec<u8> {
    let rate = 8000u32;
    let samples = rate * seconds;
    let data_len = samples * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for n in 0..samples {
        let t = n as f64 / rate as f64;
        let v = (f64::sin(2.0 * std::f64::consts::PI * 440.0 * t) * 12000.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A voicemail: a UTF-8 text part (`8bit`) and the recording as a base64 `audio/wav`
/// attachment, the way mail clients and voicemail servers attach it.
pub fn voicemail(from: &str, to: &str, recording: &[u8]) -> Vec<u8> {
    let mut msg = format!(
        "From: Voicemail <{from}>\r\nTo: <{to}>\r\nSubject: New voicemail from 555-0100\r\n\
         Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <vm.test@pbx.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_vm_boundary\"\r\n\r\n\
         This is a message in MIME format.\r\n\
         --=_vm_boundary\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n\
         Sie haben eine neue Nachricht (Länge 0:{:02}) – écoutez la pièce jointe.\r\n\
         --=_vm_boundary\r\nContent-Type: audio/wav; name=\"msg0001.wav\"\r\n\
         Content-Disposition: attachment; filename=\"msg0001.wav\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n",
        recording.len() / 16000
    )
    .into_bytes();
    for chunk in recording.chunks(57) {
        msg.extend_from_slice(STANDARD.encode(chunk).as_bytes());
        msg.extend_from_slice(b"\r\n");
    }
    msg.extend_from_slice(b"--=_vm_boundary--\r\n");
    msg
}

/// The decoded content of every leaf part, as mail-parser (an independent reader) sees it.
pub fn decoded_parts(message: &[u8]) -> Vec<Vec<u8>> {
    let parsed = mail_parser::MessageParser::default()
        .parse(message)
        .expect("mail-parser reads the message");
    parsed
        .parts
        .iter()
        .filter_map(|p| match &p.body {
            mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) => {
                Some(t.as_bytes().to_vec())
            }
            mail_parser::PartType::Binary(b) | mail_parser::PartType::InlineBinary(b) => {
                Some(b.to_vec())
            }
            _ => None,
        })
        .collect()
}

/// The message as smtp-sink dumped it: without the `X-` fields and the `Received:` field it
/// puts first, with CRLF line ends (it writes LF), and without the empty line it adds at the
/// end.
pub fn from_sink_dump(dump: &str) -> Vec<u8> {
    let mut lines = dump.split_inclusive('\n').peekable();
    while lines.peek().is_some_and(|l| l.starts_with("X-")) {
        lines.next();
    }
    if lines.peek().is_some_and(|l| l.starts_with("Received: ")) {
        lines.next();
        while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
            lines.next();
        }
    }
    let msg: String = lines.collect();
    let msg = msg.replace("\r\n", "\n");
    let msg = msg
        .strip_suffix("\n\n")
        .map_or(msg.clone(), |m| format!("{m}\n"));
    msg.replace('\n', "\r\n").into_bytes()
}
