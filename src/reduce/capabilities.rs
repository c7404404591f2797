//! Which operations a call allows now (call-resource.md, "Capabilities"), in the canonical order.

use super::call::{CallState, RecordingState};

/// One GWS call operation. The discriminant is the position in the canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Capability {
    Answer,
    Hangup,
    Hold,
    Retrieve,
    SwapCalls,
    SendDtmf,
    InitiateTransfer,
    CompleteTransfer,
    SingleStepTransfer,
    InitiateConference,
    CompleteConference,
    SingleStepConference,
    MuteMonitoredUser,
    UnmuteMonitoredUser,
    StartCallRecording,
    PauseCallRecording,
    ResumeCallRecording,
    StopCallRecording,
    AttachUserData,
    UpdateUserData,
    DeleteUserData,
    DeleteUserDataPair,
}

/// The names in canonical order, indexed by [`Capability`].
const NAMES: [&str; 22] = [
    "Answer",
    "Hangup",
    "Hold",
    "Retrieve",
    "SwapCalls",
    "SendDtmf",
    "InitiateTransfer",
    "CompleteTransfer",
    "SingleStepTransfer",
    "InitiateConference",
    "CompleteConference",
    "SingleStepConference",
    "MuteMonitoredUser",
    "UnmuteMonitoredUser",
    "StartCallRecording",
    "PauseCallRecording",
    "ResumeCallRecording",
    "StopCallRecording",
    "AttachUserData",
    "UpdateUserData",
    "DeleteUserData",
    "DeleteUserDataPair",
];

/// A set of capabilities; iterating it yields the canonical order, whatever order they were added in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(u32);

impl Capabilities {
    /// The empty set (a Released call).
    pub const NONE: Self = Self(0);

    fn with(mut self, caps: &[Capability]) -> Self {
        for &cap in caps {
            self.0 |= 1 << cap as u32;
        }
        self
    }

    fn without(mut self, cap: Capability) -> Self {
        self.0 &= !(1 << cap as u32);
        self
    }

    /// Whether `cap` is in the set.
    pub fn contains(self, cap: Capability) -> bool {
        self.0 & (1 << cap as u32) != 0
    }

    /// The names of the capabilities in canonical order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        NAMES
            .iter()
            .enumerate()
            .filter(move |(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, name)| *name)
    }
}

/// How a call takes part in consultations at its device. A consultation of a consultation is both: the
/// middle call is the consultation C of its parent and the parent H of its own consultation, and each rule
/// of call-resource.md applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsultRole {
    /// The call H: a live consultation call of the device has it as parent.
    pub parent: bool,
    /// The call C: a consultation call whose parent is live at the device.
    pub consultation: bool,
}

impl ConsultRole {
    /// Not linked.
    pub const NONE: Self = Self {
        parent: false,
        consultation: false,
    };
    /// Only the parent H of a consultation.
    pub const PARENT: Self = Self {
        parent: true,
        consultation: false,
    };
    /// Only the consultation C.
    pub const CONSULTATION: Self = Self {
        parent: false,
        consultation: true,
    };
}

/// What the capabilities of a call depend on.
#[derive(Debug, Clone, Copy)]
pub struct CapabilityInputs {
    /// The call's state.
    pub state: CallState,
    /// Whether the device is a supervisor monitoring the call.
    pub monitoring: bool,
    /// On a monitoring call: whether the monitored agent is muted.
    pub monitored_user_muted: bool,
    /// The recording state.
    pub recording: RecordingState,
    /// The call's part in a consultation.
    pub consult: ConsultRole,
}

/// The capabilities a call has now.
pub fn capabilities(inputs: CapabilityInputs) -> Capabilities {
    use Capability::*;
    const USER_DATA: [Capability; 4] = [
        AttachUserData,
        UpdateUserData,
        DeleteUserData,
        DeleteUserDataPair,
    ];
    const TRANSFER_CONFERENCE: [Capability; 4] = [
        InitiateTransfer,
        SingleStepTransfer,
        InitiateConference,
        SingleStepConference,
    ];
    const CONSULT_EXTRAS: [Capability; 3] = [SwapCalls, CompleteTransfer, CompleteConference];

    let none = Capabilities::NONE;
    let mut caps = match inputs.state {
        CallState::Released => return none,
        CallState::Ringing => none.with(&[Answer, Hangup]).with(&USER_DATA),
        CallState::Established if inputs.monitoring => {
            let mute = if inputs.monitored_user_muted {
                UnmuteMonitoredUser
            } else {
                MuteMonitoredUser
            };
            return none.with(&[Hangup, mute]).with(&USER_DATA);
        }
        CallState::Dialing => none.with(&[Hangup, SendDtmf]).with(&USER_DATA),
        CallState::Established => {
            let recording: &[Capability] = match inputs.recording {
                RecordingState::Stopped => &[StartCallRecording],
                RecordingState::Recording => &[PauseCallRecording, StopCallRecording],
                RecordingState::Paused => &[ResumeCallRecording, StopCallRecording],
            };
            none.with(&[Hangup, Hold, SendDtmf])
                .with(&TRANSFER_CONFERENCE)
                .with(recording)
                .with(&USER_DATA)
        }
        CallState::Held => none
            .with(&[Hangup, Retrieve])
            .with(&TRANSFER_CONFERENCE)
            .with(&USER_DATA),
    };
    if inputs.consult.parent && inputs.state == CallState::Held {
        caps = caps.without(Retrieve).with(&CONSULT_EXTRAS);
    }
    if inputs.consult.consultation
        && matches!(inputs.state, CallState::Dialing | CallState::Established)
    {
        caps = caps.with(&CONSULT_EXTRAS);
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(
        state: CallState,
        consult: ConsultRole,
        recording: RecordingState,
    ) -> Vec<&'static str> {
        capabilities(CapabilityInputs {
            state,
            monitoring: false,
            monitored_user_muted: false,
            recording,
            consult,
        })
        .names()
        .collect()
    }

    #[test]
    fn established_matches_the_spec_example() {
        assert_eq!(
            names(
                CallState::Established,
                ConsultRole::NONE,
                RecordingState::Stopped
            ),
            [
                "Hangup",
                "Hold",
                "SendDtmf",
                "InitiateTransfer",
                "SingleStepTransfer",
                "InitiateConference",
                "SingleStepConference",
                "StartCallRecording",
                "AttachUserData",
                "UpdateUserData",
                "DeleteUserData",
                "DeleteUserDataPair"
            ]
        );
    }

    #[test]
    fn membership_is_per_capability() {
        let held = capabilities(CapabilityInputs {
            state: CallState::Held,
            monitoring: false,
            monitored_user_muted: false,
            recording: RecordingState::Stopped,
            consult: ConsultRole::NONE,
        });
        for (cap, name) in [
            (Capability::Answer, "Answer"),
            (Capability::Hangup, "Hangup"),
            (Capability::Hold, "Hold"),
            (Capability::Retrieve, "Retrieve"),
            (Capability::SwapCalls, "SwapCalls"),
            (Capability::DeleteUserDataPair, "DeleteUserDataPair"),
        ] {
            let listed = ["Hangup", "Retrieve", "DeleteUserDataPair"].contains(&name);
            assert_eq!(held.contains(cap), listed, "{name}");
        }
        assert!(!Capabilities::NONE.contains(Capability::Hangup));
    }

    #[test]
    fn recording_operations_follow_the_recording_state() {
        let paused = names(
            CallState::Established,
            ConsultRole::NONE,
            RecordingState::Paused,
        );
        assert!(paused.contains(&"ResumeCallRecording") && paused.contains(&"StopCallRecording"));
        assert!(!paused.contains(&"StartCallRecording"));
        let held = names(
            CallState::Held,
            ConsultRole::NONE,
            RecordingState::Recording,
        );
        assert!(!held.iter().any(|n| n.contains("Recording")));
    }

    #[test]
    fn consultation_swaps_retrieve_for_completion_in_canonical_order() {
        assert_eq!(
            names(
                CallState::Held,
                ConsultRole::PARENT,
                RecordingState::Stopped
            ),
            [
                "Hangup",
                "SwapCalls",
                "InitiateTransfer",
                "CompleteTransfer",
                "SingleStepTransfer",
                "InitiateConference",
                "CompleteConference",
                "SingleStepConference",
                "AttachUserData",
                "UpdateUserData",
                "DeleteUserData",
                "DeleteUserDataPair"
            ]
        );
        assert_eq!(
            names(
                CallState::Dialing,
                ConsultRole::CONSULTATION,
                RecordingState::Stopped
            ),
            [
                "Hangup",
                "SwapCalls",
                "SendDtmf",
                "CompleteTransfer",
                "CompleteConference",
                "AttachUserData",
                "UpdateUserData",
                "DeleteUserData",
                "DeleteUserDataPair"
            ]
        );
        // A parent that is not held, or a consultation that is ringing, gains nothing.
        assert_eq!(
            names(
                CallState::Established,
                ConsultRole::PARENT,
                RecordingState::Stopped
            ),
            names(
                CallState::Established,
                ConsultRole::NONE,
                RecordingState::Stopped
            )
        );
        assert_eq!(
            names(
                CallState::Ringing,
                ConsultRole::CONSULTATION,
                RecordingState::Stopped
            ),
            [
                "Answer",
                "Hangup",
                "AttachUserData",
                "UpdateUserData",
                "DeleteUserData",
                "DeleteUserDataPair"
            ]
        );
    }

    #[test]
    fn the_middle_call_of_a_consultation_tree_takes_both_rules() {
        let both = ConsultRole {
            parent: true,
            consultation: true,
        };
        const U: [&str; 4] = [
            "AttachUserData",
            "UpdateUserData",
            "DeleteUserData",
            "DeleteUserDataPair",
        ];
        let with_u = |caps: &[&'static str]| [caps, &U[..]].concat();
        // Held: as the parent of a live consultation it swaps Retrieve for the completions.
        assert_eq!(
            names(CallState::Held, both, RecordingState::Stopped),
            with_u(&[
                "Hangup",
                "SwapCalls",
                "InitiateTransfer",
                "CompleteTransfer",
                "SingleStepTransfer",
                "InitiateConference",
                "CompleteConference",
                "SingleStepConference",
            ])
        );
        // Established: as a consultation it gains them.
        assert_eq!(
            names(CallState::Established, both, RecordingState::Recording),
            with_u(&[
                "Hangup",
                "Hold",
                "SwapCalls",
                "SendDtmf",
                "InitiateTransfer",
                "CompleteTransfer",
                "SingleStepTransfer",
                "InitiateConference",
                "CompleteConference",
                "SingleStepConference",
                "PauseCallRecording",
                "StopCallRecording",
            ])
        );
        // A held consultation has the ordinary Held operations.
        assert_eq!(
            names(
                CallState::Held,
                ConsultRole::CONSULTATION,
                RecordingState::Stopped
            ),
            with_u(&[
                "Hangup",
                "Retrieve",
                "InitiateTransfer",
                "SingleStepTransfer",
                "InitiateConference",
                "SingleStepConference",
            ])
        );
    }

    #[test]
    fn monitoring_and_released() {
        let monitoring = |muted| {
            capabilities(CapabilityInputs {
                state: CallState::Established,
                monitoring: true,
                monitored_user_muted: muted,
                recording: RecordingState::Stopped,
                consult: ConsultRole::NONE,
            })
            .names()
            .collect::<Vec<_>>()
        };
        assert_eq!(
            monitoring(false),
            [
                "Hangup",
                "MuteMonitoredUser",
                "AttachUserData",
                "UpdateUserData",
                "DeleteUserData",
                "DeleteUserDataPair"
            ]
        );
        assert_eq!(monitoring(true)[1], "UnmuteMonitoredUser");
        assert!(
            names(
                CallState::Released,
                ConsultRole::PARENT,
                RecordingState::Recording
            )
            .is_empty()
        );
    }
}
