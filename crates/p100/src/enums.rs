//! P100's status and type vocabularies.
//!
//! Every enum keeps values it does not know as `Unknown(text)` instead of failing to decode,
//! so a job can store and flag them; matching is case-insensitive because P100's pages
//! disagree on casing (`completed` vs `COMPLETED`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! p100_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            /// A value P100 sent that this version does not know; kept verbatim.
            Unknown(String),
        }

        impl $name {
            /// Decodes P100's text, case-insensitively; anything else is `Unknown`, kept
            /// bounded and without control characters ([`crate::text::clean_text`]).
            pub fn parse(text: &str) -> Self {
                $(if text.eq_ignore_ascii_case($text) { return Self::$variant; })+
                Self::Unknown(crate::text::clean_text(text))
            }

            /// The canonical (documented) spelling, or the unknown text verbatim.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Unknown(text) => text,
                }
            }

            /// Whether P100 sent a value outside the documented vocabulary.
            pub fn is_unknown(&self) -> bool {
                matches!(self, Self::Unknown(_))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Self::Unknown(text) => write!(f, "Unknown({text:?})"),
                    known => f.write_str(known.as_str()),
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Ok(Self::parse(&text))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

p100_enum!(
    /// `status` of Get KYC Status (the webhook calls it `verificationStatus`).
    KycStatus {
        /// KYC not completed or not passed yet.
        NotVerified => "NOT_VERIFIED",
        /// KYC passed.
        Verified => "VERIFIED",
        /// An earlier verification lapsed.
        Expired => "EXPIRED",
    }
);

p100_enum!(
    /// `attemptStatus` of Get KYC Status.
    KycAttemptStatus {
        /// Attempt started, waiting to be processed.
        Pending => "PENDING",
        /// The provider is processing the attempt.
        Verification => "VERIFICATION",
        /// The provider rejected the attempt (see `rejectionReason`).
        RejectedByProvider => "REJECTED_BY_PROVIDER",
        /// The attempt passed.
        Successful => "SUCCESSFUL",
    }
);

p100_enum!(
    /// `status` of a fiat balance.
    BalanceStatus {
        /// Usable, IBAN assigned.
        Active => "ACTIVE",
        /// Created, not yet active (JSON examples).
        WaitingToBeActivated => "WAITING_TO_BE_ACTIVATED",
        /// Same state as spelled in newer prose.
        WaitingForActivation => "WAITING_FOR_ACTIVATION",
    }
);

p100_enum!(
    /// `type` of a transaction-history row (assumed contract, SPEC §8).
    TransactionType {
        /// Incoming funds.
        Deposit => "DEPOSIT",
        /// Outgoing crypto funds.
        Withdrawal => "WITHDRAWAL",
        /// One leg of a currency exchange.
        Exchange => "EXCHANGE",
        /// Outgoing SEPA transfer.
        SepaTransfer => "SEPA_TRANSFER",
        /// Partner ↔ user movement.
        InternalTransfer => "INTERNAL_TRANSFER",
        /// A fee charged by P100.
        Fee => "FEE",
        /// A card transaction.
        Card => "CARD",
    }
);

p100_enum!(
    /// `status` of a transaction-history row (assumed contract, SPEC §8).
    TransactionStatus {
        /// Not settled yet.
        Pending => "PENDING",
        /// Settled.
        Completed => "COMPLETED",
        /// Did not happen (or was reversed).
        Failed => "FAILED",
    }
);

p100_enum!(
    /// `status` of Retrieve Detailed Exchange Information.
    ExchangeStatus {
        /// Terminal: executed.
        Completed => "COMPLETED",
        /// Terminal: not executed.
        Failed => "FAILED",
    }
);

p100_enum!(
    /// `status` of Get SEPA Transfer Details.
    SepaStatus {
        /// Terminal: processed and sent.
        Successful => "SUCCESSFUL",
        /// Terminal: failed, see `error`.
        Failed => "FAILED",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_are_kept_not_rejected() {
        let s: TransactionType = serde_json::from_str(r#""CASHBACK""#).unwrap();
        assert_eq!(s, TransactionType::Unknown("CASHBACK".into()));
        assert!(s.is_unknown());
        assert_eq!(serde_json::to_string(&s).unwrap(), r#""CASHBACK""#);
    }

    #[test]
    fn casing_differences_between_doc_revisions_are_accepted() {
        assert_eq!(
            ExchangeStatus::parse("completed"),
            ExchangeStatus::Completed
        );
        assert_eq!(ExchangeStatus::parse("FAILED"), ExchangeStatus::Failed);
        assert_eq!(
            KycAttemptStatus::parse("REJECTED_BY_PROVIDER"),
            KycAttemptStatus::RejectedByProvider
        );
        assert_eq!(ExchangeStatus::parse("PROCESSING").as_str(), "PROCESSING");
    }
}
