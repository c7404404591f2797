//! `callgate sim`: seeded contact-center traffic to standard output, a file, or an ingest socket, paced in
//! real time, at a multiple of it, or as fast as possible.

use crate::ingest::sim::{MIX_EXCLUSIVE, MIX_FIELDS, Mix, SimConfig, Simulator};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The options of `callgate sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Seed; the same seed and options give the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of agents (DNs 7001...; 70001... when more than 899).
    #[arg(long, default_value_t = 50)]
    pub agents: u32,
    /// Number of ACD queues (DNs 8001...).
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Number of supervisors (DNs 7901...; 79001... beside five-digit agents).
    #[arg(long, default_value_t = 3)]
    pub supervisors: u32,
    /// Mean call arrivals per second of simulated time.
    #[arg(long, default_value_t = 0.2)]
    pub calls_per_second: f64,
    /// Mean talk time in seconds.
    #[arg(long, default_value_t = 180.0)]
    pub talk_secs: f64,
    /// Mean agent wrap-up time after each call, in seconds (the agent takes no call meanwhile).
    #[arg(long, default_value_t = SimConfig::default().wrap_up_secs)]
    pub wrap_up_secs: f64,
    /// Agent-state events: logins, after-call work after each call (drawn around --wrap-up-secs), breaks
    /// with reasons, logouts once arrivals stop. `false` leaves them out.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub agent_states: bool,
    /// Mean patience of a caller waiting in a queue for a free agent, in seconds.
    #[arg(long, default_value_t = SimConfig::default().patience_secs)]
    pub patience_secs: f64,
    /// Scenario mix: NAME=PROBABILITY pairs, comma-separated (see --help for the names).
    #[arg(long, value_name = "NAME=P,...", long_help = mix_help(), action = clap::ArgAction::Append)]
    pub mix: Vec<String>,
    /// T-Server name put in every event's `Server` attribute (none: the default T-Server).
    #[arg(long)]
    pub server: Option<String>,
    /// Start of the simulated clock, in Unix seconds (the first call arrives one random gap later).
    #[arg(long, default_value_t = SimConfig::default().start / 1_000_000)]
    pub start: i64,
    /// Stop after this many calls (calls in progress finish).
    #[arg(long)]
    pub calls: Option<u64>,
    /// Stop creating calls after this many seconds of simulated time.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many events.
    #[arg(long)]
    pub events: Option<u64>,
    /// Pace: 1 is real time, 10 ten times faster, 0 as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub speed: f64,
    /// Write to this file instead of standard output.
    #[arg(long, conflicts_with = "connect")]
    pub out: Option<PathBuf>,
    /// Send to a gateway's ingest socket (HOST:PORT) instead of standard output; its last acknowledgement
    /// is printed on standard error.
    #[arg(long)]
    pub connect: Option<String>,
    /// The ingest source's token, sent as the first line when the gateway's access file has
    /// `[[ingest]]` sources (access.md).
    #[arg(
        long,
        env = "CALLGATE_INGEST_TOKEN",
        requires = "connect",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// Why `sim` failed (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The gateway refused the ingest token.
    #[error("the gateway refused the token: {0}")]
    Refused(String),
    /// No end was given, so the simulation would never stop.
    #[error("give --calls, --duration or --events")]
    Endless,
    /// `--speed` is negative or not a number.
    #[error("--speed must be 0 (as fast as possible) or more")]
    BadSpeed,
    /// A numeric option is out of its range.
    #[error("--{option} must be {rule}")]
    BadNumber {
        /// The option, without its dashes.
        option: &'static str,
        /// What it must be.
        rule: &'static str,
    },
    /// `--mix` is malformed.
    #[error("--mix: {0}")]
    Mix(#[from] MixError),
    /// The output failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What is wrong with a `--mix` value. Every message names the item, name or value at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MixError {
    /// An item without `=`.
    #[error("`{item}` is not NAME=PROBABILITY (e.g. hold=0.3)")]
    NotAPair {
        /// The item as given.
        item: String,
    },
    /// A name that is no field of the mix.
    #[error("unknown name `{name}`; the names are {}", mix_names())]
    UnknownName {
        /// The name as given.
        name: String,
    },
    /// A value that is not a number from 0 to 1.
    #[error("{name}: `{value}` is not a probability from 0 to 1")]
    BadValue {
        /// The name it was given for.
        name: String,
        /// The value as given.
        value: String,
    },
    /// A name given twice.
    #[error("{name} is given twice")]
    Repeated {
        /// The name.
        name: String,
    },
    /// Shares given for one group of mutually exclusive outcomes add up to more than 1.
    #[error(
        "{terms} = {sum}, more than 1: one roll picks at most one of these, so lower some of them"
    )]
    OverOne {
        /// The group's names and values, as `a (0.1) + b (0.95)`.
        terms: String,
        /// Their sum.
        sum: f64,
    },
}

/// Every mix name, comma-separated, for messages.
fn mix_names() -> String {
    MIX_FIELDS
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The long help of `--mix`: syntax, every name with its default, and the exclusive groups.
fn mix_help() -> String {
    let mut defaults = Mix::default();
    let mut help = String::from(
        "Scenario mix: comma-separated NAME=PROBABILITY pairs, each probability from 0 to 1, e.g.\n\
         --mix hold=0.3,conference=0.1,abandon-queue=0.05. Names not given keep their defaults; --mix may\n\
         be repeated. Names (default):\n",
    );
    for field in &MIX_FIELDS {
        let default = *(field.slot)(&mut defaults);
        let _ = writeln!(help, "  {:<22}{default:<6}{}", field.name, field.about);
    }
    help.push_str(
        "Each of these groups is one roll, so its sum is at most 1: the shares you give must fit, and\n\
         the defaults of the others in the group are scaled down to what is left (conference=1 alone\n\
         ends every answered inbound call in a conference, whenever a second agent is free):",
    );
    for group in MIX_EXCLUSIVE {
        let _ = write!(help, "\n  {}", group.join(" + "));
    }
    help.push_str("\nSee docs/simulator.md.");
    help
}

/// The mix that `--mix` values describe: [`Mix::default`] with the named fields set.
pub fn parse_mix(values: &[String]) -> Result<Mix, MixError> {
    let mut mix = Mix::default();
    let mut given: Vec<&str> = Vec::new();
    let items = values
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        // A trailing comma or an empty --mix is harmless.
        .filter(|item| !item.is_empty());
    for item in items {
        let Some((name, value)) = item.split_once('=') else {
            return Err(MixError::NotAPair {
                item: item.to_owned(),
            });
        };
        let (name, value) = (name.trim(), value.trim());
        let canonical = name.replace('_', "-");
        let Some(field) = MIX_FIELDS.iter().find(|f| f.name == canonical) else {
            return Err(MixError::UnknownName {
                name: name.to_owned(),
            });
        };
        if given.contains(&field.name) {
            return Err(MixError::Repeated {
                name: field.name.to_owned(),
            });
        }
        // NaN and the infinities fall outside the range too.
        let Some(probability) = value
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=1.0).contains(p))
        else {
            return Err(MixError::BadValue {
                name: field.name.to_owned(),
                value: value.to_owned(),
            });
        };
        *(field.slot)(&mut mix) = probability;
        given.push(field.name);
    }
    for group in MIX_EXCLUSIVE {
        fit_group(&mut mix, group, &given)?;
    }
    Ok(mix)
}

/// Makes the exclusive `group` add up to at most 1. Shares the user gave are kept as given; when they
/// leave too little room for the defaults of the others (`--mix conference=1`), those defaults are scaled
/// down to share what is left, since the user cannot have meant them. Only given shares over 1 are an
/// error.
fn fit_group(mix: &mut Mix, group: &[&str], given: &[&str]) -> Result<(), MixError> {
    // Decimal shares such as 0.7 + 0.2 + 0.1 may add up to a hair over 1 in binary.
    const SLACK: f64 = 1e-9;
    let mut named = 0.0;
    let mut rest = 0.0;
    let mut terms = Vec::new();
    for name in group {
        let value = mix.field(name).map_or(0.0, |v| *v);
        if given.contains(name) {
            named += value;
            terms.push(format!("{name} ({value})"));
        } else {
            rest += value;
        }
    }
    if named > 1.0 + SLACK {
        return Err(MixError::OverOne {
            terms: terms.join(" + "),
            sum: (named * 1e6).round() / 1e6,
        });
    }
    if named + rest > 1.0 + SLACK {
        // rest > 0 here, since named alone is at most 1.
        let scale = (1.0 - named).max(0.0) / rest;
        for name in group.iter().filter(|name| !given.contains(name)) {
            if let Some(value) = mix.field(name) {
                *value *= scale;
            }
        }
    }
    Ok(())
}

impl SimArgs {
    /// The simulator's configuration for these options, checked.
    pub fn config(&self) -> Result<SimConfig, SimError> {
        let positive = |value: f64, option| {
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(SimError::BadNumber {
                    option,
                    rule: "a number greater than 0",
                })
            }
        };
        if !(self.wrap_up_secs.is_finite() && self.wrap_up_secs >= 0.0) {
            return Err(SimError::BadNumber {
                option: "wrap-up-secs",
                rule: "0 or more",
            });
        }
        let start = self
            .start
            .checked_mul(1_000_000)
            .ok_or(SimError::BadNumber {
                option: "start",
                rule: "a Unix time in seconds",
            })?;
        Ok(SimConfig {
            seed: self.seed,
            agents: self.agents,
            queues: self.queues,
            supervisors: self.supervisors,
            calls_per_second: positive(self.calls_per_second, "calls-per-second")?,
            talk_secs: positive(self.talk_secs, "talk-secs")?,
            wrap_up_secs: self.wrap_up_secs,
            patience_secs: positive(self.patience_secs, "patience-secs")?,
            max_calls: self.calls,
            duration_secs: self.duration,
            start,
            server: self.server.clone().filter(|name| !name.is_empty()),
            mix: parse_mix(&self.mix)?,
            agent_states: self.agent_states,
        })
    }
}

/// Runs the simulation to its end.
pub fn run(args: &SimArgs) -> Result<(), SimError> {
    if args.calls.is_none() && args.duration.is_none() && args.events.is_none() {
        return Err(SimError::Endless);
    }
    if args.speed.is_nan() || args.speed < 0.0 || args.speed.is_infinite() {
        return Err(SimError::BadSpeed);
    }
    let config = args.config()?;
    let limit = usize::try_from(args.events.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
    let events = Simulator::new(config).take(limit);
    match &args.connect {
        Some(address) => {
            let stream = TcpStream::connect(address)?;
            stream.set_nodelay(true)?;
            let mut reader = BufReader::new(stream.try_clone()?);
            if let Some(token) = &args.token {
                authenticate(&stream, &mut reader, token)?;
            }
            // Read acknowledgements as they come, so the gateway never blocks writing them.
            let acks = std::thread::spawn(move || reader.lines().map_while(Result::ok).last());
            let mut writer = BufWriter::new(stream.try_clone()?);
            emit(events, &mut writer, args.speed)?;
            writer.flush()?;
            stream.shutdown(Shutdown::Write)?;
            if let Ok(Some(last)) = acks.join() {
                eprintln!("{last}");
            }
            Ok(())
        }
        None => match &args.out {
            Some(path) => emit(
                events,
                &mut BufWriter::new(std::fs::File::create(path)?),
                args.speed,
            ),
            None => emit(events, &mut BufWriter::new(io::stdout().lock()), args.speed),
        },
    }
}

/// Sends the auth line and reads the gateway's answer.
fn authenticate(
    mut stream: &TcpStream,
    reader: &mut impl BufRead,
    token: &str,
) -> Result<(), SimError> {
    let line = serde_json::json!({ "auth": token }).to_string();
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    if answer.get("authenticated").is_some() {
        Ok(())
    } else {
        Err(SimError::Refused(answer.to_string()))
    }
}

/// Writes each event as a line, waiting for its simulated time scaled by `speed` (0: no waiting).
fn emit(
    events: impl Iterator<Item = crate::ingest::sim::SimEvent>,
    out: &mut impl Write,
    speed: f64,
) -> Result<(), SimError> {
    let started = Instant::now();
    let mut first = None;
    for event in events {
        if speed > 0.0 {
            let origin = *first.get_or_insert(event.time);
            let offset = Duration::from_secs_f64((event.time - origin).max(0) as f64 / 1e6 / speed);
            let due = started + offset;
            let now = Instant::now();
            if due > now {
                // Let the events so far go out before sleeping.
                out.flush()?;
                std::thread::sleep(due - now);
            }
        }
        out.write_all(event.line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn mix(values: &[&str]) -> Result<Mix, MixError> {
        parse_mix(&values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn named_fields_are_set_and_the_others_keep_their_defaults() {
        let got = mix(&["hold=0.3,conference=0.1", " abandon-queue = 0.05 ,"]).unwrap();
        let default = Mix::default();
        assert_eq!(got.hold, 0.3);
        assert_eq!(got.conference, 0.1);
        assert_eq!(got.abandon_queue, 0.05);
        assert_eq!(got.outbound, default.outbound);
        assert_eq!(got.two_step_transfer, default.two_step_transfer);
        assert_eq!(mix(&[]).unwrap().hold, default.hold);
        assert_eq!(mix(&[""]).unwrap().hold, default.hold);
        // Snake case is accepted too; 0, 1 and short forms are probabilities.
        let got = mix(&["single_step_transfer=0", "supervisor=1,outbound-busy=.5"]).unwrap();
        assert_eq!(got.single_step_transfer, 0.0);
        assert_eq!(got.supervisor, 1.0);
        assert_eq!(got.outbound_busy, 0.5);
    }

    #[test]
    fn every_field_has_a_name_that_sets_it() {
        for field in &MIX_FIELDS {
            let got = mix(&[&format!("{}=0.01", field.name)]).unwrap();
            let mut expected = Mix::default();
            *(field.slot)(&mut expected) = 0.01;
            assert_eq!(
                format!("{got:?}"),
                format!("{expected:?}"),
                "{}",
                field.name
            );
        }
        for group in MIX_EXCLUSIVE {
            for name in group {
                assert!(MIX_FIELDS.iter().any(|f| f.name == *name), "{name}");
            }
        }
    }

    #[test]
    fn a_share_that_leaves_no_room_scales_down_the_unnamed_defaults() {
        let got = mix(&["conference=1"]).unwrap();
        assert_eq!(got.conference, 1.0);
        assert_eq!(got.two_step_transfer, 0.0);
        assert_eq!(got.consult_cancelled, 0.0);
        assert_eq!(got.single_step_transfer, 0.0);
        let got = mix(&["outbound=0.99"]).unwrap();
        assert!((got.internal - 0.01).abs() < 1e-12, "{got:?}");
        // Room enough: the defaults stay.
        let got = mix(&["conference=0.5"]).unwrap();
        assert_eq!(got.two_step_transfer, Mix::default().two_step_transfer);
        // Exactly 1 in decimal is not over 1 in binary.
        assert!(mix(&["outbound-busy=0.7,outbound-no-answer=0.3"]).is_ok());
        assert!(
            mix(&["two-step-transfer=0.7,consult-cancelled=0.2,single-step-transfer=0.1"]).is_ok()
        );
    }

    #[test]
    fn bad_items_are_errors_that_name_the_key_or_value() {
        let unknown = mix(&["hold=0.1,confrence=0.2"]).unwrap_err();
        assert_eq!(
            unknown,
            MixError::UnknownName {
                name: "confrence".into()
            }
        );
        assert!(unknown.to_string().contains("`confrence`"), "{unknown}");
        assert!(unknown.to_string().contains("conference"), "{unknown}");
        for (value, bad) in [
            ("1.5", "1.5"),
            ("-0.1", "-0.1"),
            ("abc", "abc"),
            ("NaN", "NaN"),
            ("inf", "inf"),
            ("", ""),
        ] {
            let err = mix(&[&format!("hold={value}")]).unwrap_err();
            assert_eq!(
                err,
                MixError::BadValue {
                    name: "hold".into(),
                    value: bad.into()
                }
            );
            assert!(err.to_string().starts_with("hold: "), "{err}");
        }
        assert_eq!(
            mix(&["hold"]).unwrap_err(),
            MixError::NotAPair {
                item: "hold".into()
            }
        );
        assert_eq!(
            mix(&["hold=0.1", "hold=0.2"]).unwrap_err(),
            MixError::Repeated {
                name: "hold".into()
            }
        );
        let over = mix(&["outbound=0.6,internal=0.5"]).unwrap_err();
        assert_eq!(
            over.to_string(),
            "outbound (0.6) + internal (0.5) = 1.1, more than 1: one roll picks at most one of \
             these, so lower some of them"
        );
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn config(args: &[&str]) -> Result<SimConfig, SimError> {
        let cli = Cli::try_parse_from(std::iter::once("sim").chain(args.iter().copied())).unwrap();
        cli.sim.config()
    }

    #[test]
    fn options_reach_the_config() {
        let got = config(&[
            "--wrap-up-secs",
            "0",
            "--patience-secs",
            "30",
            "--server",
            "SIP_A",
            "--start",
            "1000",
            "--mix",
            "hold=0.5",
            "--mix",
            "abandon-queue=0",
        ])
        .unwrap();
        assert_eq!(got.wrap_up_secs, 0.0);
        assert_eq!(got.patience_secs, 30.0);
        assert_eq!(got.server.as_deref(), Some("SIP_A"));
        assert_eq!(got.start, 1_000_000_000);
        assert_eq!(got.mix.hold, 0.5);
        assert_eq!(got.mix.abandon_queue, 0.0);
        let default = config(&[]).unwrap();
        assert_eq!(default.start, SimConfig::default().start);
        assert_eq!(default.server, None);
        assert!(config(&["--server", ""]).unwrap().server.is_none());
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        for args in [
            "--wrap-up-secs=-1",
            "--patience-secs=0",
            "--talk-secs=NaN",
            "--calls-per-second=0",
            "--start=9223372036854775807",
        ] {
            let err = config(&[args]).unwrap_err();
            let option = args.split('=').next().unwrap_or_default();
            assert!(err.to_string().starts_with(option), "{err}");
        }
        let err = config(&["--mix", "hold=2"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--mix: hold: `2` is not a probability from 0 to 1"
        );
    }
}
