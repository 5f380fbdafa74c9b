//! The authorized_keys option grammar (`opt,opt="value" keytype base64 comment`) and the
//! meaning of each option, following OpenSSH's `sshauthopt_parse` left to right.
//! Anything we do not implement refuses the line: fail closed.

use super::PermitOpen;
use super::addr::AddrPatterns;

/// The options of one authorized_keys line, after interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub cert_authority: bool,
    pub principals: Option<Vec<String>>,
    pub pty: bool,
    pub port_forwarding: bool,
    pub agent_forwarding: bool,
    pub x11_forwarding: bool,
    pub command: Option<String>,
    pub permitopen: Vec<PermitOpen>,
    pub from: Option<AddrPatterns>,
    /// Unix seconds; the key is valid while `now <= expiry`.
    pub expiry: Option<u64>,
}

impl Default for Options {
    /// No options: everything OpenSSH permits by default is permitted.
    fn default() -> Self {
        Options {
            cert_authority: false,
            principals: None,
            pty: true,
            port_forwarding: true,
            agent_forwarding: true,
            x11_forwarding: true,
            command: None,
            permitopen: Vec::new(),
            from: None,
            expiry: None,
        }
    }
}

/// One raw option as written: name and, for `name="value"`, the unescaped value.
pub type RawOption = (String, Option<String>);

/// Split `options rest` at the first whitespace outside double quotes.
/// Returns the raw (name, value) pairs and the remainder (key type onwards).
pub fn split(line: &str) -> Result<(Vec<RawOption>, &str), String> {
    let mut opts = Vec::new();
    let mut chars = line.char_indices().peekable();
    loop {
        let mut name = String::new();
        let mut value = None;
        while let Some(&(_, c)) = chars.peek() {
            if c == ',' || c == '=' || c == ' ' || c == '\t' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            return Err("empty option name".to_string());
        }
        if let Some(&(_, '=')) = chars.peek() {
            chars.next();
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("option {name:?}: value must be double-quoted"));
            }
            let mut v = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    // Only \" is an escape, as in OpenSSH; other backslashes are literal.
                    '\\' if matches!(chars.peek(), Some(&(_, '"'))) => {
                        v.push('"');
                        chars.next();
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => v.push(c),
                }
            }
            if !closed {
                return Err(format!("option {name:?}: unterminated quoted value"));
            }
            value = Some(v);
        }
        opts.push((name, value));
        match chars.next() {
            Some((_, ',')) => continue,
            Some((i, ' ' | '\t')) => return Ok((opts, line[i..].trim_start())),
            Some((_, c)) => return Err(format!("unexpected {c:?} after an option")),
            None => return Err("options but no key".to_string()),
        }
    }
}

/// Interpret raw options in order, so `restrict,pty` re-enables the PTY like OpenSSH.
pub fn interpret(raw: &[RawOption]) -> Result<Options, String> {
    let mut o = Options::default();
    for (name, value) in raw {
        let lname = name.to_ascii_lowercase();
        if set_flag(&mut o, &lname) {
            if value.is_some() {
                return Err(format!("option {name:?} takes no value"));
            }
            continue;
        }
        let valued = || -> Result<String, String> {
            value
                .clone()
                .ok_or_else(|| format!("option {name:?} needs a quoted value"))
        };
        match lname.as_str() {
            "command" => {
                if o.command.is_some() {
                    return Err("multiple command= options".to_string());
                }
                o.command = Some(valued()?);
            }
            "principals" => {
                if o.principals.is_some() {
                    return Err("multiple principals= options".to_string());
                }
                let v = valued()?;
                let list: Vec<String> = v.split(',').map(|p| p.trim().to_string()).collect();
                if list.iter().any(String::is_empty) {
                    return Err("principals= has an empty name".to_string());
                }
                o.principals = Some(list);
            }
            "from" => {
                if o.from.is_some() {
                    return Err("multiple from= options".to_string());
                }
                o.from = Some(AddrPatterns::parse(&valued()?)?);
            }
            "permitopen" => o.permitopen.push(PermitOpen::parse(&valued()?)?),
            "expiry-time" => {
                let t = parse_expiry(&valued()?)?;
                // Several expiry-time options: the earliest wins (OpenSSH).
                o.expiry = Some(o.expiry.map_or(t, |e| e.min(t)));
            }
            "environment" | "permitlisten" | "tunnel" | "no-touch-required" | "verify-required" => {
                return Err(format!("option {name:?} is not supported by this server"));
            }
            _ => return Err(format!("unknown option {name:?}")),
        }
    }
    if o.principals.is_some() && !o.cert_authority {
        return Err("principals= without cert-authority".to_string());
    }
    Ok(o)
}

/// Apply a valueless option (lower-cased name); false when `lname` is not one.
fn set_flag(o: &mut Options, lname: &str) -> bool {
    match lname {
        "restrict" => {
            o.pty = false;
            o.port_forwarding = false;
            o.agent_forwarding = false;
            o.x11_forwarding = false;
        }
        "cert-authority" => o.cert_authority = true,
        "pty" | "no-pty" => o.pty = lname == "pty",
        "port-forwarding" | "no-port-forwarding" => {
            o.port_forwarding = lname == "port-forwarding";
        }
        "agent-forwarding" | "no-agent-forwarding" => {
            o.agent_forwarding = lname == "agent-forwarding";
        }
        "x11-forwarding" | "no-x11-forwarding" => o.x11_forwarding = lname == "x11-forwarding",
        // We never run ~/.ssh/rc, so both are already true of this server.
        "user-rc" | "no-user-rc" => {}
        _ => return false,
    }
    true
}

/// `YYYYMMDD[HHMM[SS]]` with an optional trailing `Z`, always read as UTC: containers run in
/// UTC and a server-local interpretation would make the same file mean different things.
pub fn parse_expiry(text: &str) -> Result<u64, String> {
    let bad = || format!("expiry-time {text:?} is not YYYYMMDD[HHMM[SS]][Z]");
    let digits = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix('z'))
        .unwrap_or(text);
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> u64 {
        digits
            .get(r)
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let (year, month, day) = (num(0..4), num(4..6), num(6..8));
    let (hour, min, sec) = match digits.len() {
        8 => (0, 0, 0),
        12 => (num(8..10), num(10..12), 0),
        _ => (num(8..10), num(10..12), num(12..14)),
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let max_day = month
        .checked_sub(1)
        .and_then(|m| month_days.get(m as usize))
        .copied()
        .ok_or_else(bad)?;
    if year < 1970 || day == 0 || day > max_day || hour > 23 || min > 59 || sec > 60 {
        return Err(bad());
    }
    let signed = |v: u64| i64::try_from(v).map_err(|_| bad());
    let days = crate::civil::days_from_civil(signed(year)?, signed(month)?, signed(day)?);
    let days = u64::try_from(days).map_err(|_| bad())?;
    Ok(days * 86_400 + hour * 3600 + min * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(text: &str) -> Result<Options, String> {
        let line = format!("{text} ssh-ed25519 AAAA");
        let (raw, rest) = split(&line)?;
        assert_eq!(rest, "ssh-ed25519 AAAA");
        interpret(&raw)
    }

    #[test]
    fn split_quotes_and_escapes() {
        let (raw, rest) = split(r#"command="echo \"a b\" c\d",no-pty	ssh-ed25519 AAAA x"#).unwrap();
        assert_eq!(rest, "ssh-ed25519 AAAA x");
        assert_eq!(raw[0], ("command".into(), Some(r#"echo "a b" c\d"#.into())));
        assert_eq!(raw[1], ("no-pty".into(), None));
    }

    #[test]
    fn split_errors() {
        assert!(split(r#"command="never closed ssh-ed25519 AAAA"#).is_err());
        assert!(split("no-pty").is_err(), "options without a key");
        assert!(split("no-pty,,pty ssh-ed25519 AAAA").is_err());
        assert!(split("command=unquoted ssh-ed25519 AAAA").is_err());
        assert!(split(r#"command="a"x ssh-ed25519 AAAA"#).is_err());
    }

    #[test]
    fn restrict_then_reenable_in_order() {
        let o = opts("restrict,pty,port-forwarding").unwrap();
        assert!(o.pty && o.port_forwarding);
        assert!(!o.agent_forwarding && !o.x11_forwarding);
        let o = opts("pty,restrict").unwrap();
        assert!(!o.pty, "restrict after pty wins, as in OpenSSH");
        let o = opts("restrict,agent-forwarding,X11-Forwarding").unwrap();
        assert!(o.agent_forwarding && o.x11_forwarding && !o.pty);
    }

    #[test]
    fn negative_flags() {
        let o = opts("no-pty,NO-PORT-FORWARDING,no-agent-forwarding,no-X11-forwarding").unwrap();
        assert!(!o.pty && !o.port_forwarding && !o.agent_forwarding && !o.x11_forwarding);
        let o = Options::default();
        assert!(o.pty && o.port_forwarding && o.agent_forwarding && o.x11_forwarding);
    }

    #[test]
    fn fail_closed_on_unknown_or_unsupported() {
        for bad in [
            "no-such-option",
            r#"environment="A=b""#,
            r#"permitlisten="localhost:8080""#,
            r#"tunnel="1""#,
            "verify-required",
            "no-pty=\"x\"",
            "command",
            r#"command="a",command="b""#,
            r#"principals="a""#,
            r#"cert-authority,principals="a,,b""#,
            r#"from="10.0.0.0/33""#,
            r#"permitopen="nohost""#,
            r#"expiry-time="2025""#,
        ] {
            assert!(opts(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn valued_options() {
        let o = opts(
            r#"cert-authority,principals="alice, bob",command="ls",permitopen="db:5432",permitopen="*:*""#,
        )
        .unwrap();
        assert!(o.cert_authority);
        assert_eq!(o.principals, Some(vec!["alice".into(), "bob".into()]));
        assert_eq!(o.command.as_deref(), Some("ls"));
        assert_eq!(o.permitopen.len(), 2);
    }

    #[test]
    fn expiry_formats() {
        assert_eq!(parse_expiry("19700101"), Ok(0));
        assert_eq!(parse_expiry("19700102"), Ok(86_400));
        assert_eq!(parse_expiry("20000301"), Ok(951_868_800));
        assert_eq!(parse_expiry("20240229"), Ok(1_709_164_800));
        assert_eq!(
            parse_expiry("202402291230"),
            Ok(1_709_164_800 + 12 * 3600 + 30 * 60)
        );
        assert_eq!(parse_expiry("20240229123005Z"), Ok(1_709_209_805));
        for bad in [
            "20230229",
            "20241301",
            "20240100",
            "2024010125",
            "20240101-1",
            "",
            "1969",
        ] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
        let o = opts(r#"expiry-time="20300101",expiry-time="20250101""#).unwrap();
        assert_eq!(o.expiry, parse_expiry("20250101").ok());
    }
}
