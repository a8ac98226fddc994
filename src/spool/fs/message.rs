//! Reading one message file (formats 2 and 3, see [`crate::spool::format`]) from disk.

use std::fs::File;
use std::io;

use super::files;
use crate::spool::format::{self, FormatError, HEADER_LEN, Header, Meta};

/// How much of a file a metadata read takes at first: the header, envelope and slots of a
/// message with a few recipients fit in one page, so one read usually does.
const FIRST_READ: usize = 4096;

/// Why a message file could not be read.
pub(crate) enum ReadError {
    /// The system refused (the caller names the file).
    Io(io::Error),
    /// The bytes are not a readable message file.
    Format(FormatError),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

impl From<FormatError> for ReadError {
    fn from(e: FormatError) -> ReadError {
        ReadError::Format(e)
    }
}

/// Reads and checks a message file's metadata (everything but the body), and that the file
/// has exactly the length its header says.
pub(crate) fn read_meta(file: &File) -> Result<Meta, ReadError> {
    let len = file.metadata()?.len();
    let first = files::read_at_most(file, 0, FIRST_READ)?;
    let header = format::parse_header(&first)?;
    check_len(&header, len)?;
    let need = header.body_offset() as usize;
    let meta = if need <= first.len() {
        format::parse_meta(&first)?
    } else {
        format::parse_meta(&files::read_at_most(file, 0, need)?)?
    };
    Ok(meta)
}

/// Reads the header only.
pub(crate) fn read_header(file: &File) -> Result<Header, ReadError> {
    let len = file.metadata()?.len();
    let header = format::parse_header(&files::read_at_most(file, 0, HEADER_LEN)?)?;
    check_len(&header, len)?;
    Ok(header)
}

/// Reads the two state slots' octets.
pub(crate) fn read_slots(file: &File, header: &Header) -> io::Result<Vec<u8>> {
    files::read_at_most(file, header.slots_offset(), 2 * header.slot_len as usize)
}

/// Reads the body, and checks it against the header's length and checksum.
pub(crate) fn read_body(file: &File, header: &Header) -> Result<Vec<u8>, ReadError> {
    // The length was checked against the file's before anything this large is allocated.
    let body = files::read_at_most(file, header.body_offset(), header.body_len as usize)?;
    format::check_body(header, &body)?;
    Ok(body)
}

fn check_len(header: &Header, len: u64) -> Result<(), FormatError> {
    let want = header.file_len();
    if len < want {
        return Err(FormatError::Truncated {
            what: "file",
            need: want,
            have: len,
        });
    }
    if len > want {
        return Err(FormatError::Inconsistent(format!(
            "the file is {len} octets but its header says {want}"
        )));
    }
    Ok(())
}
