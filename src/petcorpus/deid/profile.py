"""DICOM PS3.15 Annex E, Table E.1-1 (Application Level Confidentiality Profile Attributes):
the actions of the Basic Profile and of the three options petcorpus applies, as data.

Source: DICOM PS3.15 "Security and System Management Profiles", Annex E, Table E.1-1, as
published on 2024-09-19 (DICOM 2024d; part15 chapter E of the standard's HTML edition). The
rows are transcribed for the columns "Basic Prof.", "Rtn. Pat. Chars. Opt.", "Rtn. Long.
Modif. Dates Opt." and "Clean Desc. Opt." (``-``: the option says nothing of the attribute);
tests/test_deidentify.py checks a sample of rows against the standard's text. Neither pydicom
nor highdicom ships this table.

Action codes (PS3.15 E.1.1): D dummy value; Z zero length (or dummy); X remove; K keep; C
clean; U new UID, consistent within the set; Z/D, X/Z, X/D, X/Z/D: the first unless the IOD
needs the second (Type 3 vs 2 vs 1); X/Z/U*: remove unless the IOD needs the sequence, then
replace the UIDs it holds. A requirement of an option overrides the Basic Profile's.

Tag ``PRIVATE`` is every private attribute; ``50XXXXXX`` the curve groups, ``60XX4000`` and
``60XX3000`` the overlay comments and data (repeating groups, the ``X`` digits free).
"""

from __future__ import annotations

import enum
import functools

__all__ = ["Action", "Option", "actions", "action_for", "table_rows"]


class Option(enum.IntEnum):
    """The table's columns petcorpus uses, in the order the table lists them."""

    BASIC = 0
    RETAIN_PATIENT_CHARACTERISTICS = 1
    RETAIN_LONGITUDINAL_MODIFIED_DATES = 2
    CLEAN_DESCRIPTORS = 3


class Action(enum.StrEnum):
    """The action codes of PS3.15 E.1.1."""

    D = "D"
    Z = "Z"
    X = "X"
    K = "K"
    C = "C"
    U = "U"
    Z_D = "Z/D"
    X_Z = "X/Z"
    X_D = "X/D"
    X_Z_D = "X/Z/D"
    X_Z_U = "X/Z/U*"


# tag       basic  rpc rlmd cd  keyword (pydicom's)
_TABLE = """\
00001000  X      -   -   -   AffectedSOPInstanceUID
00001001  U      -   -   -   RequestedSOPInstanceUID
00020003  U      -   -   -   MediaStorageSOPInstanceUID
00041511  U      -   -   -   ReferencedSOPInstanceUIDInFile
00080012  X/D    -   C   -   InstanceCreationDate
00080013  X/Z/D  -   C   -   InstanceCreationTime
00080014  U      -   -   -   InstanceCreatorUID
00080015  X      -   C   -   InstanceCoercionDateTime
00080017  U      -   -   -   AcquisitionUID
00080018  U      -   -   -   SOPInstanceUID
00080019  U      -   -   -   PyramidUID
00080020  Z      -   C   -   StudyDate
00080021  X/D    -   C   -   SeriesDate
00080022  X/Z    -   C   -   AcquisitionDate
00080023  Z/D    -   C   -   ContentDate
00080024  X      -   C   -   OverlayDate
00080025  X      -   C   -   CurveDate
0008002A  X/Z/D  -   C   -   AcquisitionDateTime
00080030  Z      -   C   -   StudyTime
00080031  X/D    -   C   -   SeriesTime
00080032  X/Z    -   C   -   AcquisitionTime
00080033  Z/D    -   C   -   ContentTime
00080034  X      -   C   -   OverlayTime
00080035  X      -   C   -   CurveTime
00080050  Z      -   -   -   AccessionNumber
00080054  X      -   -   -   RetrieveAETitle
00080055  X      -   -   -   StationAETitle
00080058  U      -   -   -   FailedSOPInstanceUIDList
00080080  X/Z/D  -   -   -   InstitutionName
00080081  X      -   -   -   InstitutionAddress
00080082  X/Z/D  -   -   -   InstitutionCodeSequence
00080090  Z      -   -   -   ReferringPhysicianName
00080092  X      -   -   -   ReferringPhysicianAddress
00080094  X      -   -   -   ReferringPhysicianTelephoneNumbers
00080096  X      -   -   -   ReferringPhysicianIdentificationSequence
0008009C  Z      -   -   -   ConsultingPhysicianName
0008009D  X      -   -   -   ConsultingPhysicianIdentificationSequence
00080106  D      -   C   -   ContextGroupVersion
00080107  D      -   C   -   ContextGroupLocalVersion
00080201  X      -   C   -   TimezoneOffsetFromUTC
00081000  X      -   -   -   NetworkID
00081010  X/Z/D  -   -   -   StationName
00081030  X      -   -   C   StudyDescription
0008103E  X      -   -   C   SeriesDescription
00081040  X      -   -   -   InstitutionalDepartmentName
00081041  X      -   -   -   InstitutionalDepartmentTypeCodeSequence
00081048  X      -   -   -   PhysiciansOfRecord
00081049  X      -   -   -   PhysiciansOfRecordIdentificationSequence
00081050  X      -   -   -   PerformingPhysicianName
00081052  X      -   -   -   PerformingPhysicianIdentificationSequence
00081060  X      -   -   -   NameOfPhysiciansReadingStudy
00081062  X      -   -   -   PhysiciansReadingStudyIdentificationSequence
00081070  X/Z/D  -   -   -   OperatorsName
00081072  X/D    -   -   -   OperatorIdentificationSequence
00081080  X      -   -   C   AdmittingDiagnosesDescription
00081084  X      -   -   C   AdmittingDiagnosesCodeSequence
00081088  X      -   -   C   PyramidDescription
00081110  X/Z    -   -   -   ReferencedStudySequence
00081111  X/Z/D  -   -   -   ReferencedPerformedProcedureStepSequence
00081120  X      -   -   -   ReferencedPatientSequence
00081140  X/Z/U* -   -   -   ReferencedImageSequence
00081155  U      -   -   -   ReferencedSOPInstanceUID
00081195  U      -   -   -   TransactionUID
00082111  X      -   -   C   DerivationDescription
00082112  X/Z/U* -   -   -   SourceImageSequence
00083010  U      -   -   -   IrradiationEventUID
00084000  X      -   -   C   IdentifyingComments
00100010  Z      -   -   -   PatientName
00100020  Z/D    -   -   -   PatientID
00100021  X      -   -   -   IssuerOfPatientID
00100030  Z      -   -   -   PatientBirthDate
00100032  X      -   -   -   PatientBirthTime
00100040  Z      K   -   -   PatientSex
00100050  X      -   -   -   PatientInsurancePlanCodeSequence
00100101  X      -   -   -   PatientPrimaryLanguageCodeSequence
00100102  X      -   -   -   PatientPrimaryLanguageModifierCodeSequence
00101000  X      -   -   -   OtherPatientIDs
00101001  X      -   -   -   OtherPatientNames
00101002  X      -   -   -   OtherPatientIDsSequence
00101005  X      -   -   -   PatientBirthName
00101010  X      K   -   -   PatientAge
00101020  X      K   -   -   PatientSize
00101030  X      K   -   -   PatientWeight
00101040  X      -   -   -   PatientAddress
00101050  X      -   -   -   InsurancePlanIdentification
00101060  X      -   -   -   PatientMotherBirthName
00101080  X      -   -   -   MilitaryRank
00101081  X      -   -   -   BranchOfService
00101090  X      -   -   -   MedicalRecordLocator
00101100  X      -   -   -   ReferencedPatientPhotoSequence
00102000  X      -   -   C   MedicalAlerts
00102110  X      C   -   C   Allergies
00102150  X      -   -   -   CountryOfResidence
00102152  X      -   -   -   RegionOfResidence
00102154  X      -   -   -   PatientTelephoneNumbers
00102155  X      -   -   -   PatientTelecomInformation
00102160  X      K   -   -   EthnicGroup
00102161  X      K   -   -   EthnicGroupCodeSequence
00102180  X      -   -   C   Occupation
001021A0  X      K   -   -   SmokingStatus
001021B0  X      -   -   C   AdditionalPatientHistory
001021C0  X      K   -   -   PregnancyStatus
001021D0  X      -   C   -   LastMenstrualDate
001021F0  X      -   -   -   PatientReligiousPreference
00102203  X/Z    K   -   -   PatientSexNeutered
00102297  X      -   -   -   ResponsiblePerson
00102299  X      -   -   -   ResponsibleOrganization
00104000  X      -   -   C   PatientComments
00120010  D      -   -   -   ClinicalTrialSponsorName
00120020  D      -   -   -   ClinicalTrialProtocolID
00120021  Z      -   -   -   ClinicalTrialProtocolName
00120022  X      -   -   -   IssuerOfClinicalTrialProtocolID
00120023  X      -   -   -   OtherClinicalTrialProtocolIDsSequence
00120030  Z      -   -   -   ClinicalTrialSiteID
00120031  Z      -   -   -   ClinicalTrialSiteName
00120032  X      -   -   -   IssuerOfClinicalTrialSiteID
00120040  D      -   -   -   ClinicalTrialSubjectID
00120041  X      -   -   -   IssuerOfClinicalTrialSubjectID
00120042  D      -   -   -   ClinicalTrialSubjectReadingID
00120043  X      -   -   -   IssuerOfClinicalTrialSubjectReadingID
00120050  Z      -   -   -   ClinicalTrialTimePointID
00120051  X      -   -   C   ClinicalTrialTimePointDescription
00120055  X      -   -   -   IssuerOfClinicalTrialTimePointID
00120060  Z      -   -   -   ClinicalTrialCoordinatingCenterName
00120071  X      -   -   -   ClinicalTrialSeriesID
00120072  X      -   -   C   ClinicalTrialSeriesDescription
00120073  X      -   -   -   IssuerOfClinicalTrialSeriesID
00120081  D      -   -   -   ClinicalTrialProtocolEthicsCommitteeName
00120082  X      -   -   -   ClinicalTrialProtocolEthicsCommitteeApprovalNumber
00120086  X      -   C   -   EthicsCommitteeApprovalEffectivenessStartDate
00120087  X      -   C   -   EthicsCommitteeApprovalEffectivenessEndDate
0014407C  X      -   C   -   CalibrationTime
0014407E  X      -   C   -   CalibrationDate
0016002B  X      -   -   C   MakerNote
0016004B  X      -   -   C   DeviceSettingDescription
0016004D  X      -   -   -   CameraOwnerName
0016004E  X      -   -   -   LensSpecification
0016004F  X      -   -   -   LensMake
00160050  X      -   -   -   LensModel
00160051  X      -   -   -   LensSerialNumber
00160070  X      -   -   -   GPSVersionID
00160071  X      -   -   -   GPSLatitudeRef
00160072  X      -   -   -   GPSLatitude
00160073  X      -   -   -   GPSLongitudeRef
00160074  X      -   -   -   GPSLongitude
00160075  X      -   -   -   GPSAltitudeRef
00160076  X      -   -   -   GPSAltitude
00160077  X      -   -   -   GPSTimeStamp
00160078  X      -   -   -   GPSSatellites
00160079  X      -   -   -   GPSStatus
0016007A  X      -   -   -   GPSMeasureMode
0016007B  X      -   -   -   GPSDOP
0016007C  X      -   -   -   GPSSpeedRef
0016007D  X      -   -   -   GPSSpeed
0016007E  X      -   -   -   GPSTrackRef
0016007F  X      -   -   -   GPSTrack
00160080  X      -   -   -   GPSImgDirectionRef
00160081  X      -   -   -   GPSImgDirection
00160082  X      -   -   -   GPSMapDatum
00160083  X      -   -   -   GPSDestLatitudeRef
00160084  X      -   -   -   GPSDestLatitude
00160085  X      -   -   -   GPSDestLongitudeRef
00160086  X      -   -   -   GPSDestLongitude
00160087  X      -   -   -   GPSDestBearingRef
00160088  X      -   -   -   GPSDestBearing
00160089  X      -   -   -   GPSDestDistanceRef
0016008A  X      -   -   -   GPSDestDistance
0016008B  X      -   -   -   GPSProcessingMethod
0016008C  X      -   -   -   GPSAreaInformation
0016008D  X      -   C   -   GPSDateStamp
0016008E  X      -   -   -   GPSDifferential
00180010  Z/D    -   -   C   ContrastBolusAgent
00180027  X      -   C   -   InterventionDrugStopTime
00180035  X      -   C   -   InterventionDrugStartTime
00181000  X/Z/D  -   -   -   DeviceSerialNumber
00181002  U      -   -   -   DeviceUID
00181004  X      -   -   -   PlateID
00181005  X      -   -   -   GeneratorID
00181007  X      -   -   -   CassetteID
00181008  X      -   -   -   GantryID
00181009  X      -   -   -   UniqueDeviceIdentifier
0018100A  X      -   -   -   UDISequence
0018100B  U      -   -   -   ManufacturerDeviceClassUID
00181012  X      -   C   -   DateOfSecondaryCapture
00181014  X      -   C   -   TimeOfSecondaryCapture
00181030  X/D    -   -   C   ProtocolName
00181042  X      -   C   -   ContrastBolusStartTime
00181043  X      -   C   -   ContrastBolusStopTime
00181072  X      -   C   -   RadiopharmaceuticalStartTime
00181073  X      -   C   -   RadiopharmaceuticalStopTime
00181078  X      -   C   -   RadiopharmaceuticalStartDateTime
00181079  X      -   C   -   RadiopharmaceuticalStopDateTime
001811BB  D      -   -   C   AcquisitionFieldOfViewLabel
00181200  X      -   C   -   DateOfLastCalibration
00181201  X      -   C   -   TimeOfLastCalibration
00181202  X      -   C   -   DateTimeOfLastCalibration
00181203  Z      -   C   -   CalibrationDateTime
00181204  X      -   C   -   DateOfManufacture
00181205  X      -   C   -   DateOfInstallation
00181400  X/D    -   -   C   AcquisitionDeviceProcessingDescription
00182042  U      -   -   -   TargetUID
00184000  X      -   -   C   AcquisitionComments
00185011  X      -   -   -   TransducerIdentificationSequence
0018700A  X/D    -   -   -   DetectorID
0018700C  X/D    -   C   -   DateOfLastDetectorCalibration
0018700E  X/D    -   C   -   TimeOfLastDetectorCalibration
00189074  D      -   C   -   FrameAcquisitionDateTime
00189151  D      -   C   -   FrameReferenceDateTime
00189185  X      -   -   C   RespiratoryMotionCompensationTechniqueDescription
00189367  D      -   -   -   XRaySourceID
00189369  D      -   C   -   SourceStartDateTime
0018936A  D      -   C   -   SourceEndDateTime
00189371  D      -   -   -   XRayDetectorID
00189373  X      -   -   -   XRayDetectorLabel
0018937B  X      -   -   C   MultienergyAcquisitionDescription
0018937F  X      -   -   C   DecompositionDescription
00189424  X      -   -   C   AcquisitionProtocolDescription
00189516  X/D    -   C   -   StartAcquisitionDateTime
00189517  X/D    -   C   -   EndAcquisitionDateTime
00189623  D      -   C   -   FunctionalSyncPulse
00189701  D      -   C   -   DecayCorrectionDateTime
00189804  D      -   C   -   ExclusionStartDateTime
00189919  Z/D    -   C   -   InstructionPerformedDateTime
00189937  X      -   -   C   RequestedSeriesDescription
0018A002  X      -   C   -   ContributionDateTime
0018A003  X      -   -   C   ContributionDescription
0020000D  U      -   -   -   StudyInstanceUID
0020000E  U      -   -   -   SeriesInstanceUID
00200010  Z      -   -   -   StudyID
00200027  X      -   -   C   PyramidLabel
00200052  U      -   -   -   FrameOfReferenceUID
00200200  U      -   -   -   SynchronizationFrameOfReferenceUID
00203401  X      -   -   -   ModifyingDeviceID
00203403  X      -   C   -   ModifiedImageDate
00203405  X      -   C   -   ModifiedImageTime
00203406  X      -   -   -   ModifiedImageDescription
00204000  X      -   -   C   ImageComments
00209158  X      -   -   C   FrameComments
00209161  U      -   -   -   ConcatenationUID
00209164  U      -   -   -   DimensionOrganizationUID
00281199  U      -   -   -   PaletteColorLookupTableUID
00281214  U      -   -   -   LargePaletteColorLookupTableUID
00284000  X      -   -   -   ImagePresentationComments
00320012  X      -   -   -   StudyIDIssuer
00320032  X      -   C   -   StudyVerifiedDate
00320033  X      -   C   -   StudyVerifiedTime
00320034  X      -   C   -   StudyReadDate
00320035  X      -   C   -   StudyReadTime
00321000  X      -   C   -   ScheduledStudyStartDate
00321001  X      -   C   -   ScheduledStudyStartTime
00321010  X      -   C   -   ScheduledStudyStopDate
00321011  X      -   C   -   ScheduledStudyStopTime
00321020  X      -   -   -   ScheduledStudyLocation
00321021  X      -   -   -   ScheduledStudyLocationAETitle
00321030  X      -   -   C   ReasonForStudy
00321032  X      -   -   -   RequestingPhysician
00321033  X      -   -   -   RequestingService
00321040  X      -   C   -   StudyArrivalDate
00321041  X      -   C   -   StudyArrivalTime
00321050  X      -   C   -   StudyCompletionDate
00321051  X      -   C   -   StudyCompletionTime
00321060  X/Z    -   -   C   RequestedProcedureDescription
00321066  X      -   -   C   ReasonForVisit
00321067  X      -   -   C   ReasonForVisitCodeSequence
00321070  X      -   -   C   RequestedContrastAgent
00324000  X      -   -   C   StudyComments
00340001  D      -   -   -   FlowIdentifierSequence
00340002  D      -   -   -   FlowIdentifier
00340005  D      -   -   -   SourceIdentifier
00340007  D      -   C   -   FrameOriginTimestamp
00380004  X      -   -   -   ReferencedPatientAliasSequence
00380010  X      -   -   -   AdmissionID
00380011  X      -   -   -   IssuerOfAdmissionID
00380014  X      -   -   -   IssuerOfAdmissionIDSequence
0038001A  X      -   C   -   ScheduledAdmissionDate
0038001B  X      -   C   -   ScheduledAdmissionTime
0038001C  X      -   C   -   ScheduledDischargeDate
0038001D  X      -   C   -   ScheduledDischargeTime
0038001E  X      -   -   -   ScheduledPatientInstitutionResidence
00380020  X      -   C   -   AdmittingDate
00380021  X      -   C   -   AdmittingTime
00380030  X      -   C   -   DischargeDate
00380032  X      -   C   -   DischargeTime
00380040  X      -   -   C   DischargeDiagnosisDescription
00380050  X      C   -   -   SpecialNeeds
00380060  X      -   -   -   ServiceEpisodeID
00380061  X      -   -   -   IssuerOfServiceEpisodeID
00380062  X      -   -   C   ServiceEpisodeDescription
00380064  X      -   -   -   IssuerOfServiceEpisodeIDSequence
00380300  X      -   -   -   CurrentPatientLocation
00380400  X      -   -   -   PatientInstitutionResidence
00380500  X      C   -   C   PatientState
00384000  X      -   -   C   VisitComments
003A0310  U      -   -   -   MultiplexGroupUID
003A0314  D      -   C   -   ImpedanceMeasurementDateTime
003A0329  X      -   -   C   WaveformFilterDescription
003A032B  X      -   -   C   FilterLookupTableDescription
00400001  X      -   -   -   ScheduledStationAETitle
00400002  X      -   C   -   ScheduledProcedureStepStartDate
00400003  X      -   C   -   ScheduledProcedureStepStartTime
00400004  X      -   C   -   ScheduledProcedureStepEndDate
00400005  X      -   C   -   ScheduledProcedureStepEndTime
00400006  X      -   -   -   ScheduledPerformingPhysicianName
00400007  X      -   -   C   ScheduledProcedureStepDescription
00400009  X      -   -   -   ScheduledProcedureStepID
0040000B  X      -   -   -   ScheduledPerformingPhysicianIdentificationSequence
00400010  X      -   -   -   ScheduledStationName
00400011  X      -   -   -   ScheduledProcedureStepLocation
00400012  X      C   -   -   PreMedication
00400241  X      -   -   -   PerformedStationAETitle
00400242  X      -   -   -   PerformedStationName
00400243  X      -   -   -   PerformedLocation
00400244  X      -   C   -   PerformedProcedureStepStartDate
00400245  X      -   C   -   PerformedProcedureStepStartTime
00400250  X      -   C   -   PerformedProcedureStepEndDate
00400251  X      -   C   -   PerformedProcedureStepEndTime
00400253  X      -   -   -   PerformedProcedureStepID
00400254  X      -   -   C   PerformedProcedureStepDescription
00400275  X      -   -   C   RequestAttributesSequence
00400280  X      -   -   C   CommentsOnThePerformedProcedureStep
00400310  X      -   -   C   CommentsOnRadiationDose
0040050A  X      -   -   -   SpecimenAccessionNumber
00400512  D      -   -   -   ContainerIdentifier
00400513  Z      -   -   -   IssuerOfTheContainerIdentifierSequence
0040051A  X      -   -   C   ContainerDescription
00400551  D      -   -   -   SpecimenIdentifier
00400554  U      -   -   -   SpecimenUID
00400555  X/Z    -   -   -   AcquisitionContextSequence
00400562  Z      -   -   -   IssuerOfTheSpecimenIdentifierSequence
00400600  X      -   -   C   SpecimenShortDescription
00400602  X      -   -   C   SpecimenDetailedDescription
00400610  Z      -   -   -   SpecimenPreparationSequence
004006FA  X      -   -   -   SlideIdentifier
00401001  X      -   -   -   RequestedProcedureID
00401002  X      -   -   C   ReasonForTheRequestedProcedure
00401004  X      -   -   -   PatientTransportArrangements
00401005  X      -   -   -   RequestedProcedureLocation
0040100A  X      -   -   C   ReasonForRequestedProcedureCodeSequence
00401010  X      -   -   -   NamesOfIntendedRecipientsOfResults
00401011  X      -   -   -   IntendedRecipientsOfResultsIdentificationSequence
00401101  D      -   -   -   PersonIdentificationCodeSequence
00401102  X      -   -   -   PersonAddress
00401103  X      -   -   -   PersonTelephoneNumbers
00401104  X      -   -   -   PersonTelecomInformation
00401400  X      -   -   C   RequestedProcedureComments
00402001  X      -   -   C   ReasonForTheImagingServiceRequest
00402004  X      -   C   -   IssueDateOfImagingServiceRequest
00402005  X      -   C   -   IssueTimeOfImagingServiceRequest
00402008  X      -   -   -   OrderEnteredBy
00402009  X      -   -   -   OrderEntererLocation
00402010  X      -   -   -   OrderCallbackPhoneNumber
00402011  X      -   -   -   OrderCallbackTelecomInformation
00402016  Z      -   -   -   PlacerOrderNumberImagingServiceRequest
00402017  Z      -   -   -   FillerOrderNumberImagingServiceRequest
00402400  X      -   -   C   ImagingServiceRequestComments
00403001  X      -   -   -   ConfidentialityConstraintOnPatientDataDescription
00404005  X      -   C   -   ScheduledProcedureStepStartDateTime
00404008  X      -   C   -   ScheduledProcedureStepExpirationDateTime
00404010  X      -   C   -   ScheduledProcedureStepModificationDateTime
00404011  X      -   C   -   ExpectedCompletionDateTime
00404023  U      -   -   -   ReferencedGeneralPurposeScheduledProcedureStepTransactionUID
00404025  X      -   -   -   ScheduledStationNameCodeSequence
00404027  X      -   -   -   ScheduledStationGeographicLocationCodeSequence
00404028  X      -   -   -   PerformedStationNameCodeSequence
00404030  X      -   -   -   PerformedStationGeographicLocationCodeSequence
00404034  X      -   -   -   ScheduledHumanPerformersSequence
00404035  X      -   -   -   ActualHumanPerformersSequence
00404036  X      -   -   -   HumanPerformerOrganization
00404037  X      -   -   -   HumanPerformerName
00404050  X      -   C   -   PerformedProcedureStepStartDateTime
00404051  X      -   C   -   PerformedProcedureStepEndDateTime
00404052  X      -   C   -   ProcedureStepCancellationDateTime
0040A023  X      -   C   -   FindingsGroupRecordingDateTrial
0040A024  X      -   C   -   FindingsGroupRecordingTimeTrial
0040A027  D      -   -   -   VerifyingOrganization
0040A030  D      -   C   -   VerificationDateTime
0040A032  X/D    -   C   -   ObservationDateTime
0040A033  X      -   C   -   ObservationStartDateTime
0040A073  D      -   -   -   VerifyingObserverSequence
0040A075  D      -   -   -   VerifyingObserverName
0040A078  X      -   -   -   AuthorObserverSequence
0040A07A  X      -   -   -   ParticipantSequence
0040A07C  X      -   -   -   CustodialOrganizationSequence
0040A082  Z      -   C   -   ParticipationDateTime
0040A088  Z      -   -   -   VerifyingObserverIdentificationCodeSequence
0040A110  X      -   C   -   DateOfDocumentOrVerbalTransactionTrial
0040A112  X      -   C   -   TimeOfDocumentCreationOrVerbalTransactionTrial
0040A120  D      -   C   -   DateTime
0040A121  D      -   C   -   Date
0040A122  D      -   C   -   Time
0040A123  D      -   -   -   PersonName
0040A124  U      -   -   -   UID
0040A13A  D      -   C   -   ReferencedDateTime
0040A171  U      -   -   -   ObservationUID
0040A172  U      -   -   -   ReferencedObservationUIDTrial
0040A192  X      -   C   -   ObservationDateTrial
0040A193  X      -   C   -   ObservationTimeTrial
0040A307  X      -   -   -   CurrentObserverTrial
0040A352  X      -   -   -   VerbalSourceTrial
0040A353  X      -   -   -   AddressTrial
0040A354  X      -   -   -   TelephoneNumberTrial
0040A358  X      -   -   -   VerbalSourceIdentifierCodeSequenceTrial
0040A402  U      -   -   -   ObservationSubjectUIDTrial
0040A730  D      -   -   -   ContentSequence
0040DB06  X      -   C   -   TemplateVersion
0040DB07  X      -   C   -   TemplateLocalVersion
0040DB0C  U      -   -   -   TemplateExtensionOrganizationUID
0040DB0D  U      -   -   -   TemplateExtensionCreatorUID
0040E004  X      -   C   -   HL7DocumentEffectiveTime
00420011  D      -   -   -   EncapsulatedDocument
00440004  X      -   C   -   ApprovalStatusDateTime
0044000B  X      -   C   -   ProductExpirationDateTime
00440010  X      -   C   -   SubstanceAdministrationDateTime
00440104  D      -   C   -   AssertionDateTime
00440105  X      -   C   -   AssertionExpirationDateTime
0050001B  X      -   -   -   ContainerComponentID
00500020  X      -   -   -   DeviceDescription
00500021  X      -   -   C   LongDeviceDescription
00620021  U      -   -   -   TrackingUID
00640003  U      -   -   -   SourceFrameOfReferenceUID
00686226  D      -   C   -   EffectiveDateTime
00686270  D      -   C   -   InformationIssueDateTime
006A0003  D      -   -   -   AnnotationGroupUID
006A0005  D      -   -   C   AnnotationGroupLabel
006A0006  X      -   -   C   AnnotationGroupDescription
00700001  D      -   -   -   GraphicAnnotationSequence
00700082  X      -   C   -   PresentationCreationDate
00700083  X      -   C   -   PresentationCreationTime
00700084  Z/D    -   -   -   ContentCreatorName
00700086  X      -   -   -   ContentCreatorIdentificationCodeSequence
0070031A  U      -   -   -   FiducialUID
00701101  U      -   -   -   PresentationDisplayCollectionUID
00701102  U      -   -   -   PresentationSequenceCollectionUID
0072000A  D      -   C   -   HangingProtocolCreationDateTime
0072005E  D      -   -   -   SelectorAEValue
0072005F  D      K   -   -   SelectorASValue
00720061  D      -   C   -   SelectorDAValue
00720063  D      -   C   -   SelectorDTValue
00720065  D      -   -   -   SelectorOBValue
00720066  D      -   -   C   SelectorLOValue
00720068  D      -   -   C   SelectorLTValue
0072006A  D      -   -   -   SelectorPNValue
0072006B  D      -   C   -   SelectorTMValue
0072006C  D      -   -   C   SelectorSHValue
0072006D  D      -   -   -   SelectorUNValue
0072006E  D      -   -   C   SelectorSTValue
00720070  D      -   -   C   SelectorUTValue
00720071  D      -   -   -   SelectorURValue
00741234  X      -   -   -   ReceivingAE
00741236  X      -   -   -   RequestingAE
00880140  U      -   -   -   StorageMediaFileSetUID
00880200  X      -   -   -   IconImageSequence
00880904  X      -   -   -   TopicTitle
00880906  X      -   -   -   TopicSubject
00880910  X      -   -   -   TopicAuthor
00880912  X      -   -   -   TopicKeywords
01000420  X      -   C   -   SOPAuthorizationDateTime
04000100  U      -   -   -   DigitalSignatureUID
04000105  D      -   C   -   DigitalSignatureDateTime
04000115  D      -   -   -   CertificateOfSigner
04000310  X      -   C   -   CertifiedTimestamp
04000402  X      -   -   -   ReferencedDigitalSignatureSequence
04000403  X      -   -   -   ReferencedSOPInstanceMACSequence
04000404  X      -   -   -   MAC
04000550  X      -   -   -   ModifiedAttributesSequence
04000551  X      -   -   -   NonconformingModifiedAttributesSequence
04000552  X      -   -   -   NonconformingDataElementValue
04000561  X      -   -   -   OriginalAttributesSequence
04000562  D      -   C   -   AttributeModificationDateTime
04000563  D      -   -   -   ModifyingSystem
04000564  Z      -   -   -   SourceOfPreviousValues
04000565  D      -   -   C   ReasonForTheAttributeModification
04000600  X      -   -   -   InstanceOriginStatus
20300020  X      -   -   -   TextString
21000040  X      -   C   -   CreationDate
21000050  X      -   C   -   CreationTime
21000070  X      -   -   -   Originator
21000140  D      -   -   -   DestinationAE
22000002  X/Z    -   -   C   LabelText
22000005  X/Z    -   -   -   BarcodeValue
30020121  X      -   -   C   PositionAcquisitionTemplateName
30020123  X      -   -   C   PositionAcquisitionTemplateDescription
30060002  D      -   -   C   StructureSetLabel
30060004  X      -   -   C   StructureSetName
30060006  X      -   -   C   StructureSetDescription
30060008  Z      -   C   -   StructureSetDate
30060009  Z      -   C   -   StructureSetTime
30060024  U      -   -   -   ReferencedFrameOfReferenceUID
30060026  Z      -   -   C   ROIName
30060028  X      -   -   C   ROIDescription
3006002D  X      -   C   -   ROIDateTime
3006002E  X      -   C   -   ROIObservationDateTime
30060038  X      -   -   C   ROIGenerationDescription
3006004D  X      -   -   -   ROICreatorSequence
3006004E  X      -   -   -   ROIInterpreterSequence
30060085  X      -   -   C   ROIObservationLabel
30060088  X      -   -   C   ROIObservationDescription
300600A6  Z      -   -   -   ROIInterpreter
300600C2  U      -   -   -   RelatedFrameOfReferenceUID
30080024  D      -   C   -   TreatmentControlPointDate
30080025  D      -   C   -   TreatmentControlPointTime
30080054  X/D    -   C   -   FirstTreatmentDate
30080056  X/D    -   C   -   MostRecentTreatmentDate
30080105  X/Z    -   -   -   SourceSerialNumber
30080162  D      -   C   -   SafePositionExitDate
30080164  D      -   C   -   SafePositionExitTime
30080166  D      -   C   -   SafePositionReturnDate
30080168  D      -   C   -   SafePositionReturnTime
30080250  X/D    -   C   -   TreatmentDate
30080251  X/D    -   C   -   TreatmentTime
300A0002  D      -   -   C   RTPlanLabel
300A0003  X      -   -   C   RTPlanName
300A0004  X      -   -   C   RTPlanDescription
300A0006  X/D    -   C   -   RTPlanDate
300A0007  X/D    -   C   -   RTPlanTime
300A000B  X      -   -   C   TreatmentSites
300A000E  X      -   -   C   PrescriptionDescription
300A0013  U      -   -   -   DoseReferenceUID
300A0016  X      -   -   C   DoseReferenceDescription
300A0054  U      -   -   -   TableTopPositionAlignmentUID
300A0072  X      -   -   C   FractionGroupDescription
300A0083  U      -   -   -   ReferencedDoseReferenceUID
300A00B2  X/Z    -   -   -   TreatmentMachineName
300A00C3  X      -   -   C   BeamDescription
300A00DD  X      -   -   C   BolusDescription
300A0196  X      -   -   C   FixationDeviceDescription
300A01A6  X      -   -   C   ShieldingDeviceDescription
300A01B2  X      -   -   C   SetupTechniqueDescription
300A0216  X      -   -   -   SourceManufacturer
300A022C  D      -   C   -   SourceStrengthReferenceDate
300A022E  D      -   C   -   SourceStrengthReferenceTime
300A02EB  X      -   -   C   CompensatorDescription
300A0608  D      -   -   C   TreatmentPositionGroupLabel
300A0609  U      -   -   -   TreatmentPositionGroupUID
300A0611  Z      -   -   -   RTAccessoryHolderSlotID
300A0615  Z      -   -   -   RTAccessoryDeviceSlotID
300A0619  D      -   -   C   RadiationDoseIdentificationLabel
300A0623  D      -   -   C   RadiationDoseInVivoMeasurementLabel
300A062A  D      -   -   C   RTToleranceSetLabel
300A0650  U      -   -   -   PatientSetupUID
300A0676  X      -   -   C   EquipmentFrameOfReferenceDescription
300A067C  D      -   -   C   RadiationGenerationModeLabel
300A067D  Z      -   -   C   RadiationGenerationModeDescription
300A0700  U      -   -   -   TreatmentSessionUID
300A0734  D      -   -   C   TreatmentToleranceViolationDescription
300A0736  D      -   C   -   TreatmentToleranceViolationDateTime
300A073A  D      -   C   -   RecordedRTControlPointDateTime
300A0741  D      -   C   -   InterlockDateTime
300A0742  D      -   -   C   InterlockDescription
300A0760  D      -   C   -   OverrideDateTime
300A0783  D      -   -   C   InterlockOriginDescription
300A0785  U      -   -   -   ReferencedTreatmentPositionGroupUID
300A078E  X      -   -   C   PatientTreatmentPreparationProcedureParameterDescription
300A0792  X      -   -   C   PatientTreatmentPreparationMethodDescription
300A0794  X      -   -   C   PatientSetupPhotoDescription
300A079A  X      -   -   C   DisplacementReferenceLabel
300C0113  X      -   -   C   ReasonForOmissionDescription
300C0127  D      -   C   -   BeamHoldTransitionDateTime
300E0004  Z      -   C   -   ReviewDate
300E0005  Z      -   C   -   ReviewTime
300E0008  X/Z    -   -   -   ReviewerName
30100006  U      -   -   -   ConceptualVolumeUID
3010000B  U      -   -   -   ReferencedConceptualVolumeUID
3010000F  Z      -   -   C   ConceptualVolumeCombinationDescription
30100013  U      -   -   -   ConstituentConceptualVolumeUID
30100015  U      -   -   -   SourceConceptualVolumeUID
30100017  Z      -   -   C   ConceptualVolumeDescription
3010001B  Z      -   -   -   DeviceAlternateIdentifier
3010002D  D      -   -   -   DeviceLabel
30100031  U      -   -   -   ReferencedFiducialsUID
30100033  D      -   -   C   UserContentLabel
30100034  D      -   -   C   UserContentLongLabel
30100035  D      -   -   C   EntityLabel
30100036  X      -   -   C   EntityName
30100037  X      -   -   C   EntityDescription
30100038  D      -   -   C   EntityLongLabel
3010003B  U      -   -   -   RTTreatmentPhaseUID
30100043  Z      -   -   -   ManufacturerDeviceIdentifier
3010004C  X/D    -   C   -   IntendedPhaseStartDate
3010004D  X/D    -   C   -   IntendedPhaseEndDate
30100054  D      -   -   C   RTPrescriptionLabel
30100056  X/D    -   -   C   RTTreatmentApproachLabel
3010005A  Z      -   -   C   RTPhysicianIntentNarrative
3010005C  Z      -   -   C   ReasonForSuperseding
30100061  X      -   -   C   PriorTreatmentDoseDescription
3010006E  U      -   -   -   DosimetricObjectiveUID
3010006F  U      -   -   -   ReferencedDosimetricObjectiveUID
30100077  X/D    -   -   C   TreatmentSite
3010007A  Z      -   -   C   TreatmentTechniqueNotes
3010007B  Z      -   -   C   PrescriptionNotes
3010007F  Z      -   -   C   FractionationNotes
30100081  Z      -   -   C   PrescriptionNotesSequence
30100085  X      -   C   -   IntendedFractionStartTime
40000010  X      -   -   -   Arbitrary
40004000  X      -   -   -   TextComments
40080040  X      -   -   -   ResultsID
40080042  X      -   -   -   ResultsIDIssuer
40080100  X      -   C   -   InterpretationRecordedDate
40080101  X      -   C   -   InterpretationRecordedTime
40080102  X      -   -   -   InterpretationRecorder
40080108  X      -   C   -   InterpretationTranscriptionDate
40080109  X      -   C   -   InterpretationTranscriptionTime
4008010A  X      -   -   -   InterpretationTranscriber
4008010B  X      -   -   C   InterpretationText
4008010C  X      -   -   -   InterpretationAuthor
40080111  X      -   -   -   InterpretationApproverSequence
40080112  X      -   C   -   InterpretationApprovalDate
40080113  X      -   C   -   InterpretationApprovalTime
40080114  X      -   -   -   PhysicianApprovingInterpretation
40080115  X      -   -   C   InterpretationDiagnosisDescription
40080118  X      -   -   -   ResultsDistributionListSequence
40080119  X      -   -   -   DistributionName
4008011A  X      -   -   -   DistributionAddress
40080200  X      -   -   -   InterpretationID
40080202  X      -   -   -   InterpretationIDIssuer
40080300  X      -   -   C   Impressions
40084000  X      -   -   C   ResultsComments
50XXXXXX  X      -   -   -   (curve data)
60XX3000  X      -   -   -   OverlayData
60XX4000  X      -   -   -   OverlayComments
FFFAFFFA  X      -   -   -   DigitalSignaturesSequence
FFFCFFFC  X      -   -   -   DataSetTrailingPadding
PRIVATE   X      -   -   -   (private)
"""


def table_rows() -> list[tuple[str, tuple[str, str, str, str], str]]:
    """The rows as written: (tag text, the four columns' codes or ``-``, keyword)."""
    rows = []
    for line in _TABLE.splitlines():
        tag, basic, rpc, rlmd, cd, keyword = line.split(maxsplit=5)
        rows.append((tag, (basic, rpc, rlmd, cd), keyword))
    return rows


@functools.cache
def actions() -> dict[str, tuple[Action | None, ...]]:
    """Tag text (``"00100010"``, ``"60XX3000"``, ``"PRIVATE"``) → each column's action."""
    return {
        tag: tuple(None if c == "-" else Action(c) for c in codes) for tag, codes, _ in table_rows()
    }


def _repeating(tag: int) -> str | None:
    group, elem = tag >> 16, tag & 0xFFFF
    if 0x5000 <= group <= 0x50FF and group % 2 == 0:
        return "50XXXXXX"
    if 0x6000 <= group <= 0x60FF and group % 2 == 0 and elem in (0x4000, 0x3000):
        return f"60XX{elem:04X}"
    return None


def action_for(tag: int, options: tuple[Option, ...] = tuple(Option)) -> Action | None:
    """The action on ``tag`` under the Basic Profile and ``options`` (None: not listed).

    The last listed option that names the attribute wins over the Basic Profile (options
    do not overlap on the attributes petcorpus uses).

    >>> action_for(0x00100010)  # PatientName
    <Action.Z: 'Z'>
    >>> action_for(0x00101030)  # PatientWeight: kept by Retain Patient Characteristics
    <Action.K: 'K'>
    >>> action_for(0x00080020)  # StudyDate: cleaned (shifted) by Modified Dates
    <Action.C: 'C'>
    """
    table = actions()
    row = table.get(f"{tag:08X}")
    if row is None:
        key = "PRIVATE" if (tag >> 16) % 2 == 1 else _repeating(tag)
        row = table.get(key) if key else None
    if row is None:
        return None
    chosen = row[Option.BASIC]
    for option in options:
        if option is not Option.BASIC and row[option] is not None:
            chosen = row[option]
    return chosen
